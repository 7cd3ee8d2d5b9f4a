#!/usr/bin/env bash
# `make run`: install what is missing, then run the whole system with a seeded inventory.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

# The server's shape (docs/operations.md, "API replicas behind HAProxy"):
#   VCENTER_API_REPLICAS=N  API processes; N > 1 puts HAProxy (deploy/haproxy/haproxy.cfg) in
#                           front of them on the usual port, and the URLs printed are its own
#   VCENTER_WORKERS=M       orchestrator workers
# Both default to 1: one API, one worker, as before. vcenter.lab.demo reads them.
replica_shape() {
  export VCENTER_API_REPLICAS="${VCENTER_API_REPLICAS:-1}" VCENTER_WORKERS="${VCENTER_WORKERS:-1}"
}

scripts/install.sh
replica_shape
exec .venv/bin/python -m vcenter.lab.demo "$@"
