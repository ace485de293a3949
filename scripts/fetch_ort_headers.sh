#!/usr/bin/env bash
# Fetch the onnxruntime C/C++ headers for building the custom-op library, without installing anything system-wide.
#
# The onnxruntime pip wheel ships libonnxruntime.so but no headers. Debian trixie's libonnxruntime-dev (ORT 1.21,
# ORT_API_VERSION 21) has them; a library built against API 21 loads in newer onnxruntime releases. This script
# downloads that .deb with a private apt state (the machine's own apt configuration is untouched), extracts it into
# .deps/onnxruntime/ and prints the include directory on stdout (last line). Idempotent: a second run only prints.
#
#   bash scripts/fetch_ort_headers.sh            # -> .../.deps/onnxruntime/root/usr/include/onnxruntime
#   ORT_INCLUDE_DIR=/my/include bash scripts/fetch_ort_headers.sh   # validates and prints a user-given directory
set -euo pipefail
cd "$(dirname "$0")/.."

HEADER=onnxruntime_cxx_api.h
if [ -n "${ORT_INCLUDE_DIR:-}" ]; then
  if [ -f "$ORT_INCLUDE_DIR/$HEADER" ]; then
    (cd "$ORT_INCLUDE_DIR" && pwd)
    exit 0
  fi
  echo "fetch_ort_headers: ORT_INCLUDE_DIR=$ORT_INCLUDE_DIR has no $HEADER" >&2
  exit 1
fi

DIR="$(pwd)/.deps/onnxruntime"
INCLUDE="$DIR/root/usr/include/onnxruntime"
if [ -f "$INCLUDE/$HEADER" ]; then
  echo "$INCLUDE"
  exit 0
fi

command -v apt-get >/dev/null || { echo "fetch_ort_headers: apt-get not found; pass -DORT_INCLUDE_DIR=<dir with $HEADER> instead" >&2; exit 1; }
command -v dpkg-deb >/dev/null || { echo "fetch_ort_headers: dpkg-deb not found" >&2; exit 1; }
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg
[ -f "$KEYRING" ] || { echo "fetch_ort_headers: $KEYRING missing (apt-get install debian-archive-keyring)" >&2; exit 1; }

mkdir -p "$DIR/lists/partial" "$DIR/archives/partial"
echo "deb [signed-by=$KEYRING] http://deb.debian.org/debian trixie main" > "$DIR/sources.list"
APT_OPTS=(-o "Dir::Etc::sourcelist=$DIR/sources.list" -o "Dir::Etc::sourceparts=-" -o "Dir::State::Lists=$DIR/lists"
          -o "Dir::Cache::archives=$DIR/archives" -o "APT::Sandbox::User=root" -q)
echo "fetch_ort_headers: downloading libonnxruntime-dev from Debian trixie into $DIR" >&2
apt-get "${APT_OPTS[@]}" update >&2
rm -f "$DIR"/libonnxruntime-dev_*.deb
(cd "$DIR" && apt-get "${APT_OPTS[@]}" download libonnxruntime-dev >&2)
deb=$(ls "$DIR"/libonnxruntime-dev_*.deb | head -n1)
rm -rf "$DIR/root"
dpkg-deb -x "$deb" "$DIR/root"
[ -f "$INCLUDE/$HEADER" ] || { echo "fetch_ort_headers: $deb has no $HEADER" >&2; exit 1; }
echo "$INCLUDE"
