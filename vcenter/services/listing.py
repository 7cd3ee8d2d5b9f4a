"""Generic listing: filter by equality on declared fields, sort by a declared field, page.

``sort`` is ``field`` or ``-field``; filters are equality on declared columns; ``name`` also
accepts a ``*`` wildcard. Anything else is refused with 422 naming the parameter.
"""
from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from vcenter.core.errors import Invalid


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
        if field == "name" and isinstance(value, str) and "*" in value:
            query = query.where(column.like(value.replace("%", r"\%").replace("_", r"\_").replace("*", "%"), escape="\\"))
        else:
            query = query.where(column == value)
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
