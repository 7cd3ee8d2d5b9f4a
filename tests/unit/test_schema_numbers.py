"""Every request body refuses what JSON decoding turns into non-numbers: Python's json module
reads `NaN`, `Infinity` and `-Infinity`, which pass `gt=0` or an absent bound and then break
date arithmetic or a database column (a 500)."""

from __future__ import annotations

import importlib
import pkgutil
import typing

import pytest
from pydantic import BaseModel, ValidationError

import vcenter.schemas


def _request_models() -> list[type[BaseModel]]:
    models: set[type[BaseModel]] = set()
    for info in pkgutil.iter_modules(vcenter.schemas.__path__):
        module = importlib.import_module(f"vcenter.schemas.{info.name}")
        for value in vars(module).values():
            if isinstance(value, type) and issubclass(value, BaseModel) and value.model_config.get("extra") == "forbid":
                models.add(value)
    return sorted(models, key=lambda m: (m.__module__, m.__name__))


def _float_fields(model: type[BaseModel]) -> list[str]:
    out = []
    for name, field in model.model_fields.items():
        annotation = field.annotation
        args = typing.get_args(annotation) or (annotation,)
        if float in args:
            out.append(name)
    return out


CASES = [(model, name) for model in _request_models() for name in _float_fields(model)]


def test_request_models_are_found():
    assert len(_request_models()) > 20 and len(CASES) > 10


@pytest.mark.parametrize("model,name", CASES, ids=[f"{m.__name__}.{n}" for m, n in CASES])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf"), 1e308])
def test_a_float_field_refuses_non_numbers_and_absurd_sizes(model, name, value):
    errors = None
    try:
        model.model_validate({name: value})
    except ValidationError as exc:
        errors = [e for e in exc.errors() if e["loc"] and e["loc"][0] == name]
    # Other required fields may be missing; what matters is that this field was refused.
    assert errors, f"{model.__name__}.{name} accepted {value!r}"
