"""The API's OpenAPI document without a running server: what ``/openapi.json`` serves, built
from the routes alone (no database, no Redis is reached). The OpenAPI linter of ``make test``
reads it (scripts/lint-openapi.sh, docs/api.md#the-contract-and-its-linter).

    python -m vcenter.api.openapi_document [FILE]    # FILE, or standard output
"""

from __future__ import annotations

import json
import sys
import tempfile
from typing import Any


def openapi_document() -> dict[str, Any]:
    from vcenter.api.app import create_app
    from vcenter.core.settings import Settings

    with tempfile.TemporaryDirectory() as scratch:  # a database URL the app never opens
        return create_app(Settings(database_url=f"sqlite:///{scratch}/unused.db")).openapi()


def main(argv: list[str]) -> int:
    text = json.dumps(openapi_document(), indent=2, sort_keys=False) + "\n"
    if argv:
        with open(argv[0], "w", encoding="utf-8") as out:
            out.write(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
