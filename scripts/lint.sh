#!/bin/bash
# Static checks, the same for `make lint` and the first suite of `make test`: ruff's formatter
# (every file as `ruff format` leaves it), ruff (pyflakes and pycodestyle rules, pyproject
# [tool.ruff]), mypy (strict on the packages pyproject
# [tool.mypy] names), the import-linter contracts (pyproject [tool.importlinter]) and the
# Prometheus alert rules (`promtool check rules`, Debian's prometheus package: scripts/install.sh).
# Every check runs even when an earlier one fails; the exit status says whether all passed.
set -uo pipefail
cd "$(dirname "$0")/.."
rc=0
echo "== ruff format";  .venv/bin/ruff format --check . || rc=1
echo "== ruff";         .venv/bin/ruff check . || rc=1
echo "== mypy";         .venv/bin/mypy || rc=1
echo "== lint-imports"; .venv/bin/lint-imports || rc=1
echo "== promtool"
if command -v promtool >/dev/null; then
  promtool check rules deploy/prometheus/alerts.yml || rc=1
  promtool check config --syntax-only deploy/prometheus/prometheus.yml || rc=1
else
  echo "promtool missing: scripts/install.sh installs Debian's prometheus package"; rc=1
fi
exit $rc
