#!/usr/bin/env bash
# `make run`: install what is missing, then run the whole system with a seeded inventory.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
scripts/install.sh
exec .venv/bin/python -m vcenter.lab.demo "$@"
