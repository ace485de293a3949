#!/usr/bin/env bash
# Build libwq_ops a second time under AddressSanitizer + UndefinedBehaviorSanitizer (build/sanitize/) and run the
# kernel parity and fuzz tests against that build. Any sanitizer report aborts the process and fails the run.
#
#   bash scripts/sanitize.sh            # after scripts/setup.sh (uses ${WQ_VENV:-.venv})
#
# The Python interpreter is not instrumented, so the ASan runtime is preloaded; leak detection is off because
# CPython leaks by design at exit.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${WQ_VENV:-.venv}/bin/python"
ORT_INC=$(bash scripts/fetch_ort_headers.sh | tail -n1)
cmake -S . -B build/sanitize -DCMAKE_BUILD_TYPE=RelWithDebInfo -DWQ_SANITIZE=ON -DORT_INCLUDE_DIR="$ORT_INC" >/dev/null
cmake --build build/sanitize -j 2 >/dev/null
LIB="$(pwd)/build/sanitize/runtime_ops/libwq_ops.so"
[ -f "$LIB" ] || { echo "sanitize: $LIB was not built" >&2; exit 1; }
ASAN_RT="$(g++ -print-file-name=libasan.so)"
[ -f "$ASAN_RT" ] || { echo "sanitize: the ASan runtime ($ASAN_RT) is missing" >&2; exit 1; }
# libstdc++ is preloaded too: ASan's __cxa_throw interceptor needs it loaded before the runtime initializes (the
# python binary itself does not link it), or the first C++ exception aborts.
STDCXX="$(g++ -print-file-name=libstdc++.so)"
echo "sanitize: running the kernel tests against $LIB (ASan + UBSan)"
WQCOMPILE_OPS_LIBRARY="$LIB" LD_PRELOAD="$ASAN_RT $STDCXX" \
  ASAN_OPTIONS="detect_leaks=0:abort_on_error=1" UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1" \
  "$PY" -m pytest -q -p no:cacheprovider tests/runtime/test_parity.py tests/runtime/test_fuzz.py tests/runtime/test_fusions.py \
    tests/runtime/test_thresholds.py tests/runtime/test_packed_thresholds.py tests/runtime/test_dense_thresholds.py \
    tests/runtime/test_level_maxpool_isa.py tests/runtime/test_octave_thresholds.py tests/runtime/test_level_lookup_vbmi.py \
    tests/runtime/test_u8_path.py tests/runtime/test_dense_float_thresholds.py \
    tests/runtime/test_depthwise_lanes.py tests/runtime/test_arithmetic_thresholds.py tests/runtime/test_nibble_panels.py tests/runtime/test_pool_tiles.py "$@"
