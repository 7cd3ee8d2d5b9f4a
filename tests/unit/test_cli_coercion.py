"""The plain parameters of `vcenter` are converted without pydantic (vcenter.client_cli.coercion)
exactly as typer's own conversion (pydantic's TypeAdapter) converts them: the same value, or a
usage error for the same inputs; other parameters are left to typer."""

from __future__ import annotations

from datetime import datetime
from enum import Enum
from pathlib import Path
from typing import Any

import pytest
import typer
from typer._click.exceptions import BadParameter
from typer._coercion import resolve_type_descriptor
from typer.models import OptionInfo

from vcenter.client_cli import coercion

INPUTS = [
    "12",
    " 12 ",
    "-3",
    "5",
    "6",
    "0.25",
    "-7",
    "1.0",
    "1.5",
    "1e3",
    "0x10",
    "1_000",
    "abc",
    "",
    "true",
    "False",
    " yes ",
    "off",
    "1",
    "0",
    "maybe",
    "nan",
    "inf",
    "web1",
    "/dc1/vm/web1",
    "é",
    b"bytes",
    7,
    2.0,
    2.5,
    True,
]


class Colour(Enum):
    RED = "red"


def _outcome(runtime: Any, value: Any) -> tuple[str, Any]:
    try:
        return ("ok", runtime._coerce_value(value, param=None, ctx=None))
    except BadParameter:
        return ("usage error", None)


@pytest.mark.parametrize(
    "annotation, info",
    [
        (str, OptionInfo()),
        (int, OptionInfo()),
        (float, OptionInfo()),
        (bool, OptionInfo()),
        (list[str], OptionInfo()),
        (list[int], OptionInfo()),
        (int, OptionInfo(min=1, max=5)),
        (float, OptionInfo(min=0.5)),
        (int, OptionInfo(min=1, max=5, clamp=True)),
    ],
)
def test_plain_parameters_convert_as_typer_s_own_conversion(annotation, info):
    descriptor = resolve_type_descriptor(annotation, info)
    ours, theirs = coercion.build_runtime_param(descriptor), coercion._typer_build(descriptor)
    assert isinstance(ours, coercion.PlainRuntimeParam) and not isinstance(theirs, coercion.PlainRuntimeParam)
    for value in INPUTS:
        value = [value, value] if annotation in (list[str], list[int]) else value
        mine, typers = _outcome(ours, value), _outcome(theirs, value)
        assert repr(mine) == repr(typers) and type(mine[1]) is type(typers[1]), (annotation, value, mine, typers)


@pytest.mark.parametrize(
    "annotation, info",
    [(Colour, OptionInfo()), (Path, OptionInfo()), (datetime, OptionInfo()), (str, OptionInfo(parser=str.upper)), (tuple[str, int], OptionInfo())],
)
def test_other_parameters_are_left_to_typer(annotation, info):
    assert coercion.plain_converter(resolve_type_descriptor(annotation, info)) is None


def test_a_command_converts_its_plain_parameters_and_refuses_a_bad_one():
    from typer.testing import CliRunner

    coercion.install()
    app = typer.Typer()

    @app.command()
    def run(name: str, count: int = typer.Option(1, min=1, max=5), ratio: float = typer.Option(0.5), tags: list[str] = typer.Option([])) -> None:
        typer.echo(repr((name, count, ratio, tags)))

    done = CliRunner().invoke(app, ["web1", "--count", "3", "--ratio", "2", "--tags", "a", "--tags", "b"])
    assert done.exit_code == 0 and done.output.strip() == "('web1', 3, 2.0, ['a', 'b'])", done.output
    refused = CliRunner().invoke(app, ["web1", "--count", "three"])
    assert refused.exit_code == 2 and "valid integer" in refused.output
    beyond = CliRunner().invoke(app, ["web1", "--count", "6"])
    assert beyond.exit_code == 2 and "less than or equal to 5" in beyond.output
