"""Command-line values converted without pydantic, so that a running command starts fast.

typer (0.29) converts every parameter of a command it runs with a pydantic ``TypeAdapter``
built at that moment: importing pydantic and building the adapters is most of a client
command's start (issue 18 item 4 asks for under 0.3 s; bench/cli_start.py). The parameters of
the `vcenter` commands are plain ``str``, ``int``, ``float`` and ``bool`` values (or lists of
them, numbers within bounds): ``install()`` has typer convert those here, the way its
adapters do (strings as given, numbers parsed and bounded, a boolean from the words pydantic
accepts), and leaves every other parameter (choices, paths, files, dates, parsers) to typer's
own conversion.

typer's hook is private (``typer.core.build_runtime_param``, the ``RuntimeParam`` contract):
tests/unit/test_cli_coercion.py checks that each plain parameter converts as typer's own
would, and tests/unit/test_cli_imports.py that the client commands import no pydantic.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, get_args, get_origin

import typer.core
from typer._click.exceptions import BadParameter
from typer._coercion import RuntimeParam, TypeDescriptor

_TRUE = frozenset({"1", "on", "t", "true", "y", "yes"})
_FALSE = frozenset({"0", "off", "f", "false", "n", "no"})


def _text(value: Any) -> str:
    if value is None:
        raise ValueError("None is not a valid string")
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


# pydantic's integers from text: ASCII digits, a sign, underscores between digits, a fraction
# of zeros ("12.0"); no exponent, no other base
_INTEGER = re.compile(r"[+-]?[0-9]+(?:_[0-9]+)*(?:\.0+)?", re.ASCII)


def _integer(value: Any) -> int:
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    text = _text(value).strip() if not isinstance(value, float) else ""
    if not _INTEGER.fullmatch(text):
        raise ValueError("Input should be a valid integer, unable to parse string as an integer")
    return int(text.split(".")[0])


def _number(value: Any) -> float:
    if isinstance(value, (int, float)):
        return float(value)
    text = _text(value).strip()
    try:
        if not text.isascii():
            raise ValueError(text)
        return float(text)
    except ValueError:
        raise ValueError("Input should be a valid number, unable to parse string as a number") from None


def _boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    word = _text(value).strip().lower()
    if word == "" or word in _FALSE:
        return False
    if word in _TRUE:
        return True
    raise ValueError("Input should be a valid boolean, unable to interpret input")


def _bounded(number: Any, low: Any, high: Any, clamp: bool) -> Any:
    """``number`` within typer's ``min``/``max``: refused outside (pydantic's words), or
    brought to the bound with ``clamp``; NaN is within no bound (kept by ``clamp``, as typer's
    conversion does)."""
    if number != number and not clamp:
        raise ValueError("Input should be a finite number within the bounds")
    if low is not None and number < low:
        if not clamp:
            raise ValueError(f"Input should be greater than or equal to {low}")
        return type(number)(low)
    if high is not None and number > high:
        if not clamp:
            raise ValueError(f"Input should be less than or equal to {high}")
        return type(number)(high)
    return number


PLAIN: dict[Any, Callable[[Any], Any]] = {str: _text, int: _integer, float: _number, bool: _boolean}


def plain_converter(descriptor: TypeDescriptor) -> Callable[[Any], Any] | None:
    """The conversion of a plain parameter (``str``, ``int``, ``float``, ``bool``, a list of
    one of them, a number within bounds; without choices, path or file handling or a
    parser); None otherwise."""
    info = descriptor.parameter_info
    if descriptor.is_file or descriptor.is_path or descriptor.is_choice or info.parser is not None:
        return None
    annotation: Any = descriptor.annotation
    if descriptor.is_ranged:
        number = PLAIN[annotation]
        return lambda value: _bounded(number(value), info.min, info.max, bool(info.clamp))
    if get_origin(annotation) is list:
        (item,) = get_args(annotation) or (None,)
        each = PLAIN.get(item)
        if each is None:
            return None
        return lambda value: [each(v) for v in (value if isinstance(value, (list, tuple)) else [value])]
    return PLAIN.get(annotation)


@dataclass(frozen=True)
class PlainRuntimeParam(RuntimeParam):
    """typer's RuntimeParam for a plain parameter: a conversion error is click's BadParameter
    (a usage error, exit status 2), as typer's own are."""

    convert: Callable[[Any], Any]

    def _coerce_value(self, value: Any, param: Any, ctx: Any) -> Any:
        try:
            return self.convert(value)
        except ValueError as exc:
            raise BadParameter(str(exc), ctx=ctx, param=param) from None


_typer_build: Callable[[TypeDescriptor], RuntimeParam] = getattr(typer.core, "build_runtime_param")  # noqa: B009 (not in typer.core's __all__)


def build_runtime_param(descriptor: TypeDescriptor) -> RuntimeParam:
    convert = plain_converter(descriptor)
    if convert is None:
        return _typer_build(descriptor)
    return PlainRuntimeParam(parameter_info=descriptor.parameter_info, annotation=descriptor.annotation, convert=convert)


def install() -> None:
    """Have typer convert plain parameters here (idempotent)."""
    setattr(typer.core, "build_runtime_param", build_runtime_param)  # noqa: B010 (not in typer.core's __all__)
