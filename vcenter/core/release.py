"""This installation's release: the version of the installed `virtcenter` distribution, which
the command line prints (`vcenter --version`), each agent reports with its host's facts and
the server compares with its own (a host whose agent is older is shown as such)."""

from __future__ import annotations

from functools import lru_cache
from importlib.metadata import PackageNotFoundError, version

UNKNOWN = "0+unknown"  # run from a source tree that was never installed


@lru_cache
def release() -> str:
    try:
        return version("virtcenter")
    except PackageNotFoundError:
        return UNKNOWN
