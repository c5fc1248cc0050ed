# Sourced, not run: makes sure the SAM tooling is in the git-ignored venv .venv-sam
# (aws-sam-cli, cfn-lint, and cargo-lambda with its zig linker, all from PyPI; SAM in
# moto's venv would downgrade boto3), that rustup has the arm64 target the functions are
# built for, and puts the venv first on PATH. Prints only to stderr.
SAM_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SAM_VENV="$SAM_ROOT/.venv-sam"
if ! "$SAM_VENV/bin/sam" --version >/dev/null 2>&1 || ! "$SAM_VENV/bin/cfn-lint" --version >/dev/null 2>&1 \
  || ! [ -x "$SAM_VENV/bin/cargo-lambda" ]; then
  echo "infra: installing aws-sam-cli, cfn-lint and cargo-lambda into $SAM_VENV" >&2
  python3 -m venv "$SAM_VENV" 2>/dev/null || { apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null && python3 -m venv "$SAM_VENV"; }
  "$SAM_VENV/bin/pip" install -q --disable-pip-version-check aws-sam-cli cfn-lint cargo-lambda >&2
fi
if command -v rustup >/dev/null && ! rustup target list --installed | grep -qx aarch64-unknown-linux-gnu; then
  echo "infra: adding the Rust target aarch64-unknown-linux-gnu (Lambda arm64)" >&2
  rustup target add aarch64-unknown-linux-gnu >&2
fi
export PATH="$SAM_VENV/bin:$PATH" AWS_DEFAULT_REGION=${AWS_DEFAULT_REGION:-us-east-1} SAM_CLI_TELEMETRY=0
