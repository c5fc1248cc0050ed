#!/usr/bin/env bash
# `sam build` from a fresh clone: installs SAM and cargo-lambda (PyPI) and the arm64 Rust
# target when missing, builds every function of template.yaml for arm64 through
# cargo-lambda (BuildMethod rust-cargolambda) into .aws-sam/build, and prints the size of
# each function's bootstrap. Arguments go to `sam build`; SAM_BUILD_DIR (default
# .aws-sam/build, where `sam deploy` looks) says where the build goes.
set -euo pipefail
source "$(dirname "$0")/sam-tools.sh"
cd "$SAM_ROOT"
BUILD_DIR=${SAM_BUILD_DIR:-.aws-sam/build}
sam build --build-dir "$BUILD_DIR" "$@" >&2
for bootstrap in "$BUILD_DIR"/*/bootstrap; do
  [ -f "$bootstrap" ] || { echo "sam build produced no bootstrap" >&2; exit 1; }
  # ELF e_machine (bytes 18-19, little-endian): b7 00 is AArch64, what Lambda arm64 runs.
  machine=$(od -An -tx1 -j18 -N2 "$bootstrap" | tr -d ' ')
  [ "$machine" = b700 ] || { echo "$bootstrap is not an arm64 executable (e_machine $machine)" >&2; exit 1; }
  awk -v f="$(basename "$(dirname "$bootstrap")")" -v b="$(stat -c %s "$bootstrap")" \
    'BEGIN { printf "%-18s %5.1f MiB (%d bytes), arm64\n", f, b / 1048576, b }'
done
