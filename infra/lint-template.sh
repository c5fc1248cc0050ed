#!/usr/bin/env bash
# Lints template.yaml with cfn-lint and `sam validate --lint`.
set -euo pipefail
source "$(dirname "$0")/sam-tools.sh"
cd "$SAM_ROOT"
cfn-lint template.yaml
sam validate --lint --template template.yaml >/dev/null
echo "template.yaml: cfn-lint and sam validate --lint pass"
