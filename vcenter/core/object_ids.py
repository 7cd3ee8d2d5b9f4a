"""Object ids and integer bounds: the one parser of an id written in a path, a query or a form,
and the integer types request bodies declare.

Decisions:
- An object id in text is canonical decimal: ``0`` or ``[1-9][0-9]*``, ASCII only, at most
  INT32_MAX. Anything else (a sign, leading zeros, ``_``, Unicode digits, a decimal point or an
  exponent, whitespace, raw or percent-encoded) is refused with 422 INVALID_ID. There is one
  spelling per id, so the privilege check (vcenter.api.deps.requires,
  vcenter.dashboard.web.ui_requires) and the route can never read one string as two objects:
  both call parse_object_id.
- Bounds are those of the columns on both databases: an id and every ``Integer`` column are
  32-bit on PostgreSQL (INTEGER); ``BigInteger`` columns are 64-bit. A value beyond them is a
  422 at the schema, never a 500 from the driver.
- In JSON bodies an id is a JSON integer (ObjectIdField is strict: no ``"42"``, no ``42.0``,
  no ``true``); other integers keep pydantic's usual coercion and are only bounded.

An id may also be written with a prefix naming its kind, as the vSphere-compatible API does
(``vm-42``, ``domain-c7``): ``parse_prefixed_id`` splits off one of the prefixes its caller
allows and reads the rest with the same rule (``vm-+42``, ``vm-042``, ``vm-4_2`` are refused).

Aliases: ObjectIdPath / ObjectIdQuery / OptionalObjectIdQuery and Offset for FastAPI
parameters (they carry the parser and the bounds into the OpenAPI schema); ObjectIdField,
Int32, NonNegativeInt32 and NonNegativeInt64 for pydantic models (request bodies, agent reports).
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from annotated_types import Ge, Le
from pydantic import BeforeValidator, Field, Strict

from vcenter.core.errors import Invalid

INT32_MIN = -(2**31)
INT32_MAX = 2**31 - 1
INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1

# ASCII only: str.isdigit() and int() also take Unicode digits ("٤٢" is 42 to int()).
_CANONICAL = re.compile(r"(?:0|[1-9][0-9]*)")
_CANONICAL_SIGNED = re.compile(r"(?:0|-?[1-9][0-9]*)")
# The longest canonical text of an int32/int64: longer input is refused before int() reads it.
_MAX_DIGITS = 20


def is_canonical_object_id(raw: str) -> bool:
    return _CANONICAL.fullmatch(raw) is not None and len(raw) <= _MAX_DIGITS and int(raw) <= INT32_MAX


def parse_object_id(raw: Any, field: str = "id") -> int:
    """The id written canonically in ``raw``, or 422 INVALID_ID naming ``field``."""
    if isinstance(raw, str) and is_canonical_object_id(raw):
        return int(raw)
    shown = raw if isinstance(raw, str) and len(raw) <= 40 else (f"{raw[:40]}..." if isinstance(raw, str) else raw)
    raise Invalid(
        f"{field}: {shown!r} is not an object id: write it as decimal digits (0-9) without sign, leading zeros, spaces or decimal point, at most {INT32_MAX}",
        code="INVALID_ID",
        details={"field": field, "value": shown},
    )


def parse_prefixed_id(raw: Any, prefixes: tuple[str, ...], field: str = "id") -> tuple[str, int]:
    """The prefix and the id of ``raw`` written ``<prefix><canonical id>`` with one of
    ``prefixes`` (the longest that matches), or 422 INVALID_ID naming ``field``."""
    if isinstance(raw, str):
        for prefix in sorted(prefixes, key=len, reverse=True):
            if raw.startswith(prefix) and is_canonical_object_id(raw[len(prefix) :]):
                return prefix, int(raw[len(prefix) :])
    shown = raw[:40] if isinstance(raw, str) else raw
    raise Invalid(
        f"{field}: {shown!r} is not an identifier of the form {' or '.join(p + 'N' for p in prefixes)} (N in decimal digits without sign, leading zeros or separators, at most {INT32_MAX})",
        code="INVALID_ID",
        details={"field": field, "value": shown},
    )


def parse_int(raw: Any, field: str, low: int = INT32_MIN, high: int = INT32_MAX) -> int:
    """A canonical decimal integer (an optional ``-``, no leading zeros, ASCII) within
    [low, high], or 422 INVALID_INTEGER naming ``field``: for integer filters that are not ids."""
    if isinstance(raw, str) and _CANONICAL_SIGNED.fullmatch(raw) and len(raw) <= _MAX_DIGITS + 1 and low <= int(raw) <= high:
        return int(raw)
    raise Invalid(f"{field}: {raw!r} is not an integer between {low} and {high}", code="INVALID_INTEGER", details={"field": field, "low": low, "high": high})


def _param(raw: Any) -> Any:
    # FastAPI hands path and query values over as text; a default (0, None) is not validated.
    if isinstance(raw, int) and not isinstance(raw, bool):
        return raw
    return parse_object_id(raw)


# FastAPI parameters (path or query: FastAPI keeps a pydantic Field inside Annotated, so the
# bounds reach the OpenAPI schema; give a default with ``=``, never ``= Query(...)``, which would
# drop the validator). No FastAPI import: the agents import this module through the contracts.
ObjectIdPath = Annotated[int, Field(ge=0, le=INT32_MAX, description="object id (canonical decimal)"), BeforeValidator(_param)]
ObjectIdQuery = ObjectIdPath
OptionalObjectIdQuery = Annotated[int | None, Field(ge=0, le=INT32_MAX, description="object id (canonical decimal)"), BeforeValidator(_param)]
# The offset of a page: no table here holds more rows than an id counts.
Offset = Annotated[int, Field(ge=0, le=INT32_MAX, description="rows to skip")]

# pydantic body fields.
ObjectIdField = Annotated[int, Strict(), Ge(0), Le(INT32_MAX)]
Int32 = Annotated[int, Ge(INT32_MIN), Le(INT32_MAX)]
NonNegativeInt32 = Annotated[int, Ge(0), Le(INT32_MAX)]
NonNegativeInt64 = Annotated[int, Ge(0), Le(INT64_MAX)]


def checked_object_id(path_params: dict[str, Any], on: str | None, param: str | None) -> int | None:
    """The id of the object a route's privilege is checked on (None: the root, when ``on`` is
    None), read from the raw path text with parse_object_id, the parser of the route's own
    ObjectIdPath parameter: a spelling it refuses (``+42``, ``42.0``, `` 42``) is a 422 before
    any privilege decision, never a check on the root or on another object."""
    if on is None:
        return None
    if param is None or param not in path_params:
        # A route declaring its object without that path parameter is a programming error
        # (tests/api/test_security_ids.py walks the routes); never check the root instead.
        raise LookupError(f"the route declares its privilege on a {on} but has no path parameter {param!r}")
    return parse_object_id(path_params[param], field=param)
