"""passes/ and runtime_ops/ are mapped into the one import root, in a wheel from a clean checkout and editable."""

from __future__ import annotations

import re
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

import wqcompile

REPO = Path(__file__).resolve().parents[1]


def test_editable_install_maps_the_top_level_folders():
    import wqcompile.passes
    import wqcompile.runtime_ops

    assert Path(wqcompile.passes.__file__).resolve() == REPO / "passes" / "__init__.py"
    assert Path(wqcompile.runtime_ops.__file__).resolve() == REPO / "runtime_ops" / "__init__.py"
    assert Path(wqcompile.__file__).resolve() == REPO / "wqcompile" / "__init__.py"


def test_no_bare_imports_of_the_mapped_folders():
    bare = re.compile(r"^\s*(from|import)\s+(passes|runtime_ops)\b", re.M)
    offenders = [str(p.relative_to(REPO)) for folder in ("wqcompile", "passes", "runtime_ops", "tests", "models", "benchmarks")
                 for p in (REPO / folder).rglob("*.py") if bare.search(p.read_text())]
    assert offenders == []


@pytest.mark.slow
def test_wheel_from_a_clean_checkout(tmp_path):
    if not (REPO / ".git").exists() or shutil.which("git") is None:
        pytest.skip("needs a git checkout")
    checkout = tmp_path / "checkout"
    subprocess.run(["git", "clone", "-q", "--no-hardlinks", str(REPO), str(checkout)], check=True)
    # the working tree may be ahead of HEAD while developing: test the files as they are
    for rel in subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split():
        src = REPO / rel
        if src.is_file():
            (checkout / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, checkout / rel)
    dist = tmp_path / "dist"
    env = dict(os.environ)
    headers = REPO / ".deps" / "onnxruntime" / "root" / "usr" / "include" / "onnxruntime"
    if headers.is_dir():
        env["CMAKE_ARGS"] = f"{env.get('CMAKE_ARGS', '')} -DORT_INCLUDE_DIR={headers}"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(dist),
                    str(checkout)], check=True, capture_output=True, env=env)
    wheel = next(dist.glob("wqcompile-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "wqcompile/passes/__init__.py" in names and "wqcompile/passes/rewrite.py" in names
    assert "wqcompile/runtime_ops/qconv.py" in names and "wqcompile/quant/weighted_entropy.py" in names
    assert not any(n.startswith(("passes/", "runtime_ops/", "tests/", "models/")) for n in names)
    assert not any(n.endswith((".cc", ".h")) for n in names)
    if headers.is_dir():
        assert "wqcompile/_lib/libwq_ops.so" in names
    unpacked = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(unpacked)
    # -S: no site processing, so the editable install's import hook (a .pth file) is not active; the unpacked
    # wheel comes first on the path and the dependencies come from this environment's site-packages.
    deps = sysconfig.get_paths()["purelib"]
    probe = ("import wqcompile, wqcompile.passes as p, wqcompile.runtime_ops as r, wqcompile.cli, wqcompile.runtime as rt; "
             "print(wqcompile.__file__); print(p.__file__); print(r.__file__); print(len(p.default_pipeline())); "
             "print(rt.get_library_path() if rt.is_available() else 'no-library')")
    out = subprocess.run([sys.executable, "-S", "-c", probe], cwd=tmp_path, capture_output=True, text=True, check=True,
                         env={"PYTHONPATH": f"{unpacked}{os.pathsep}{deps}", "PATH": "/usr/bin:/bin"}).stdout.split()
    from wqcompile.passes import default_pipeline

    assert all(line.startswith(str(unpacked)) for line in out[:3]), out
    assert out[3] == str(len(default_pipeline()))
    if headers.is_dir():
        assert out[4].startswith(str(unpacked))
