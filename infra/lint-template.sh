#!/usr/bin/env bash
# Lints template.yaml with cfn-lint and `sam validate --lint`, both installed into a
# git-ignored venv of their own (SAM in moto's venv would downgrade boto3).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
VENV="$ROOT/.venv-sam"
if ! "$VENV/bin/sam" --version >/dev/null 2>&1 || ! "$VENV/bin/cfn-lint" --version >/dev/null 2>&1; then
  echo "infra: installing aws-sam-cli and cfn-lint into $VENV" >&2
  python3 -m venv "$VENV" 2>/dev/null || { apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null && python3 -m venv "$VENV"; }
  "$VENV/bin/pip" install -q --disable-pip-version-check aws-sam-cli cfn-lint
fi
cd "$ROOT"
"$VENV/bin/cfn-lint" template.yaml
AWS_DEFAULT_REGION=us-east-1 SAM_CLI_TELEMETRY=0 "$VENV/bin/sam" validate --lint --template template.yaml >/dev/null
echo "template.yaml: cfn-lint and sam validate --lint pass"
