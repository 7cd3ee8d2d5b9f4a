"""The one object-id parser and the integer bounds of vcenter.core.object_ids: one spelling per
id (anything else is 422 INVALID_ID), and the bounds of the database columns."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, ValidationError

from vcenter.core.errors import Invalid
from vcenter.core.object_ids import (
    INT32_MAX,
    INT64_MAX,
    NonNegativeInt64,
    ObjectIdField,
    checked_object_id,
    parse_int,
    parse_object_id,
)

# Every spelling that int() (or str.isdigit()) reads as 42, or as another number, but that is
# not the canonical "42".
NON_CANONICAL_42 = [
    "+42",
    "-42",
    "042",
    "0042",
    "4_2",
    "42.0",
    "42.",
    "4.2e1",
    "42e0",
    "0x2a",
    "0b101010",
    "0o52",
    " 42",
    "42 ",
    "\t42",
    "42\n",
    "\u00a042",
    "42\u2003",
    "\u0664\u0662",  # Arabic-Indic digits
    "\uff14\uff12",  # full-width digits
    "\u09ea\u09e8",  # Bengali digits
    "4\u200b2",  # zero-width space
    "²",
    "",
    "-0",
    "+0",
    "00",
]


@pytest.mark.parametrize("raw", NON_CANONICAL_42)
def test_a_non_canonical_id_is_refused_with_invalid_id(raw):
    with pytest.raises(Invalid) as refused:
        parse_object_id(raw, "vm_id")
    assert refused.value.code == "INVALID_ID" and refused.value.status == 422
    assert refused.value.details["field"] == "vm_id"


@pytest.mark.parametrize("raw, value", [("0", 0), ("1", 1), ("42", 42), (str(INT32_MAX), INT32_MAX)])
def test_a_canonical_id_is_read(raw, value):
    assert parse_object_id(raw) == value


@pytest.mark.parametrize("raw", [str(INT32_MAX + 1), str(2**63), str(2**64), "9" * 30, "1" * 10_000])
def test_an_id_beyond_the_integer_column_is_refused(raw):
    with pytest.raises(Invalid) as refused:
        parse_object_id(raw)
    assert refused.value.code == "INVALID_ID"
    assert len(refused.value.message) < 400  # a long input is not echoed whole


@pytest.mark.parametrize("raw", [42, None, 42.0, True, b"42"])
def test_only_text_is_parsed(raw):
    with pytest.raises(Invalid):
        parse_object_id(raw)


def test_integer_filters_are_canonical_and_bounded():
    assert parse_int("-5", "x") == -5 and parse_int("0", "x") == 0
    for raw in ("+5", "05", "-05", "5.0", " 5", "\u0665", str(INT32_MAX + 1), "-0"):
        with pytest.raises(Invalid) as refused:
            parse_int(raw, "x")
        assert refused.value.code == "INVALID_INTEGER"
    assert parse_int(str(INT64_MAX), "x", high=INT64_MAX) == INT64_MAX


def test_the_privilege_check_reads_the_path_with_the_same_parser():
    assert checked_object_id({"vm_id": "42"}, "vm", "vm_id") == 42
    assert checked_object_id({}, None, None) is None  # a route checked on the root
    for raw in ("+42", "42.0", " 42", "42 "):
        with pytest.raises(Invalid) as refused:
            checked_object_id({"vm_id": raw}, "vm", "vm_id")
        assert refused.value.code == "INVALID_ID"
    with pytest.raises(LookupError):  # a declared object without its path parameter: never the root
        checked_object_id({"id": "42"}, "vm", "vm_id")


class _Body(BaseModel):
    host_id: ObjectIdField | None = None
    size: NonNegativeInt64 = 0


@pytest.mark.parametrize("value", ['"42"', "42.0", "true", "-1", str(INT32_MAX + 1), str(2**63), '"+42"'])
def test_a_body_id_is_a_json_integer_within_integer(value):
    with pytest.raises(ValidationError) as refused:
        _Body.model_validate_json(f'{{"host_id": {value}}}')
    assert refused.value.errors()[0]["loc"] == ("host_id",)


def test_body_integers_within_bounds_pass_and_beyond_fail():
    assert _Body.model_validate_json('{"host_id": 42, "size": 9223372036854775807}').host_id == 42
    with pytest.raises(ValidationError):
        _Body.model_validate_json('{"size": 9223372036854775808}')
