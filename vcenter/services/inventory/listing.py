"""Generic listing: filter by equality on declared fields, sort by a declared field, page.

``sort`` is ``field`` or ``-field``; filters are equality on declared columns; ``name`` also
accepts a ``*`` wildcard; a filter given several values (a list) matches any of them. Anything else is refused with 422 naming the parameter.

A filter given as text (a query parameter) is read by the type of its column
(filter_value): an id column (primary or foreign key, ``*_id``) with the one id parser of
vcenter.core.object_ids (422 INVALID_ID), another integer column as a canonical integer within
the column's range (422 INVALID_INTEGER), a boolean column as ``true``/``false``, a text column
as text without NUL. So a value the database cannot hold or compare is a 422, never a 500,
and ``?host_id=+42`` is refused rather than read as 42.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import BigInteger, Boolean, Integer, func, or_, select
from sqlalchemy.orm import Session

from vcenter.core.errors import Invalid
from vcenter.core.object_ids import INT32_MAX, INT32_MIN, INT64_MAX, INT64_MIN, parse_int, parse_object_id


def value_kind(column: Any, field: str) -> str:
    """How a filter on ``column`` reads its text: ``boolean``, ``id``, ``integer`` or ``text``
    (vcenter.api.filters declares the query parameter by the same kind)."""
    if isinstance(column.type, Boolean):
        return "boolean"
    if isinstance(column.type, Integer):  # BigInteger is an Integer too
        return "id" if column.primary_key or column.foreign_keys or field.endswith("_id") else "integer"
    return "text"


def filter_kind(model: Any, field: str) -> str:
    """``value_kind`` of the column behind filter ``field`` of ``model``."""
    return value_kind(getattr(model, field).property.columns[0], field)


def filter_value(column: Any, field: str, raw: Any) -> Any:
    """The value of filter ``field`` on ``column`` from its text ``raw`` (a non-text value,
    from a caller in code, is taken as it is)."""
    if not isinstance(raw, str):
        return raw
    kind = value_kind(column, field)
    if kind == "boolean":
        if raw.lower() not in ("true", "false"):
            raise Invalid(f"{field}: give true or false", code="INVALID_FILTER", details={"field": field})
        return raw.lower() == "true"
    if kind == "id":
        return parse_object_id(raw, field)
    if kind == "integer":
        wide = isinstance(column.type, BigInteger)
        return parse_int(raw, field, INT64_MIN if wide else INT32_MIN, INT64_MAX if wide else INT32_MAX)
    if "\x00" in raw:  # text: PostgreSQL refuses NUL in a string (a 500 from the driver)
        raise Invalid(f"{field}: NUL is not allowed", code="INVALID_FILTER", details={"field": field})
    return raw


def _matches(column: Any, field: str, value: Any) -> Any:
    """The condition of one filter value: equality, or a ``*`` wildcard on ``name``."""
    if field == "name" and isinstance(value, str) and "*" in value:
        return column.like(value.replace("%", r"\%").replace("_", r"\_").replace("*", "%"), escape="\\")
    return column == value


def list_rows(
    session: Session,
    model: Any,
    *,
    filters: dict[str, Any],
    filterable: set[str],
    sort: str | None,
    sortable: set[str],
    offset: int,
    limit: int,
    restrict: Any = None,
) -> tuple[int, list[Any]]:
    """``restrict``: a WHERE clause applied first (permissions), so counts and pages never
    include rows the caller may not see."""
    query = select(model)
    if restrict is not None:
        query = query.where(restrict)
    for field, value in filters.items():
        if value is None:
            continue
        if field not in filterable:
            raise Invalid(f"cannot filter on {field!r}", code="INVALID_FILTER", details={"field": field})
        column = getattr(model, field)
        values = [filter_value(column.property.columns[0], field, v) for v in (value if isinstance(value, list) else [value])]
        query = query.where(or_(*(_matches(column, field, v) for v in values)))
    total = session.scalar(select(func.count()).select_from(query.subquery()))
    if sort:
        field = sort.lstrip("-")
        if field not in sortable:
            raise Invalid(f"cannot sort on {field!r}", code="INVALID_SORT", details={"field": "sort", "allowed": sorted(sortable)})
        column = getattr(model, field)
        query = query.order_by(column.desc() if sort.startswith("-") else column.asc(), model.id.asc())
    else:
        query = query.order_by(model.id.asc())
    rows = list(session.scalars(query.offset(offset).limit(limit)))
    return total or 0, rows
