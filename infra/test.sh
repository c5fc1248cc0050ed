#!/usr/bin/env bash
# The whole test suite, on a fresh machine or a dirty one: installs and starts what is
# missing (PostgreSQL, MariaDB, moto, fakesnow, bqemulator, OpenSSH, Babelfish; SAM,
# cfn-lint and cargo-lambda), lints the template and the code (rustfmt, clippy with
# warnings as errors), runs the unit and integration tests against those
# real services, and finally packages the functions with `sam build` (arm64, through
# cargo-lambda), so packaging cannot break unnoticed.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"

command -v cargo >/dev/null || { echo "cargo is required (https://rustup.rs)" >&2; exit 1; }
eval "$(bash infra/services.sh)"
# schemathesis (PyPI) for the API fuzz test (tests/tests/fuzz.rs), in a venv of its own.
if ! .venv-fuzz/bin/schemathesis --version >/dev/null 2>&1; then
  echo "infra: installing schemathesis into .venv-fuzz" >&2
  python3 -m venv .venv-fuzz && .venv-fuzz/bin/pip install -q --disable-pip-version-check 'schemathesis>=4.32,<5' >&2
fi
bash infra/lint-template.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
# The CLI tests run the sluice binary; build it with the workspace's feature set first.
cargo build --workspace --bins
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast
else
  cargo test --workspace --no-fail-fast
fi
# Packaging, as a user deploys: sam build of every function for arm64 through
# cargo-lambda. Into a build directory of its own, and without LTO: this checks the
# packaging in minutes; `bash infra/sam-build.sh` makes the optimised build to deploy.
SAM_BUILD_DIR=.aws-sam/test-build CARGO_PROFILE_RELEASE_LTO=false CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 \
  bash infra/sam-build.sh
