"""passes/ and runtime_ops/ are mapped into the one import root, in a wheel from a clean checkout and editable."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
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
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(dist),
                    str(checkout)], check=True, capture_output=True)
    wheel = next(dist.glob("wqcompile-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "wqcompile/passes/__init__.py" in names and "wqcompile/passes/rewrite.py" in names
    assert "wqcompile/runtime_ops/qconv.py" in names and "wqcompile/quant/weighted_entropy.py" in names
    assert not any(n.startswith(("passes/", "runtime_ops/", "tests/", "models/")) for n in names)
    assert not any(n.endswith(".cc") for n in names)
    unpacked = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(unpacked)
    probe = ("import wqcompile.passes as p, wqcompile.runtime_ops as r, wqcompile.cli; "
             "print(p.__file__); print(r.__file__); print(len(p.default_pipeline()))")
    out = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, check=True,
                         env={"PYTHONPATH": str(unpacked), "PATH": "/usr/bin:/bin"}).stdout.split()
    assert out[0].startswith(str(unpacked)) and out[1].startswith(str(unpacked)) and out[2] == "8"
