"""A list's filters as declared query parameters: what the OpenAPI document shows and what
FastAPI validates before the list is read (vcenter.services.inventory.listing reads them).

Each filter is repeatable (``?name=web1&name=web2``: rows matching any of the values) up to
MAX_FILTER_VALUES values, each text value at most MAX_FILTER_LENGTH characters; its type
comes from its column: an id column takes object ids (the one id parser: 422 INVALID_ID), a
column with a declared set of values takes one of them (``power_state=bogus``: 422 INVALID
naming the parameter), a boolean column ``true``/``false``, other columns text (``name`` with
a ``*`` wildcard). A query parameter that is neither a filter nor one of the list's own
parameters (paging, sort, ...) is 422 INVALID_FILTER, as before they were declared.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from enum import Enum
from typing import Annotated, Any, Literal

from fastapi import Query, Request
from pydantic import StringConstraints

from vcenter.core.errors import Invalid
from vcenter.core.object_ids import ObjectIdPath
from vcenter.services.inventory.listing import filter_kind

MAX_FILTER_VALUES = 50
MAX_FILTER_LENGTH = 255

_Text = Annotated[str, StringConstraints(max_length=MAX_FILTER_LENGTH)]


def filter_type(model: Any, field: str, choices: dict[str, type[Enum]]) -> Any:
    """The type of one value of filter ``field`` on ``model`` (as listing.filter_value reads it)."""
    if field in choices:
        return choices[field]
    kind = filter_kind(model, field)
    if kind == "boolean":
        return Literal["true", "false"]
    if kind == "id":
        return ObjectIdPath
    return _Text  # integers too: listing.filter_value reads them within their column's range


def list_filters(model: Any, filterable: Iterable[str], *, choices: dict[str, type[Enum]] | None = None, others: Iterable[str] = ("offset", "limit", "sort")) -> Callable[..., dict[str, list[Any]]]:
    """A dependency declaring the filters ``filterable`` of a list of ``model`` as query
    parameters; it answers the filters given, field -> values. ``others``: the list's other
    query parameters (any further one is refused)."""
    choices = choices or {}
    fields = sorted(filterable)
    allowed = set(fields) | set(others)
    parameters = [inspect.Parameter("request", inspect.Parameter.KEYWORD_ONLY, annotation=Request)]
    for field in fields:
        wildcard = " (`*` matches any text)" if field == "name" else ""
        annotation = Annotated[
            list[filter_type(model, field, choices)] | None,  # type: ignore[misc]
            Query(max_length=MAX_FILTER_VALUES, description=f"only rows whose {field} is one of these values{wildcard}; repeat the parameter for several"),
        ]
        parameters.append(inspect.Parameter(field, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=annotation))

    def read_filters(request: Request, **values: Any) -> dict[str, list[Any]]:
        unknown = sorted(set(request.query_params) - allowed)
        if unknown:
            raise Invalid(f"cannot filter on {unknown[0]!r}", code="INVALID_FILTER", details={"field": unknown[0], "allowed": fields})
        return {field: [v.value if isinstance(v, Enum) else v for v in given] for field, given in values.items() if given}

    read_filters.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    return read_filters
