"""Reading JSON from strangers: the limits hold, and nothing under them is refused."""

from __future__ import annotations

from decimal import Decimal

import pytest

from bracketflow.domain.validation import parse_price, parse_quantity
from bracketflow.errors import ValidationFailed
from bracketflow.schemas import wire_json


@pytest.mark.parametrize(
    ("text", "depth"),
    [
        ("{}", 1),
        ('{"a": [1, {"b": []}]}', 4),
        ('["[[[[", "{{{{"]', 1),
        (r'["\"[[[["]', 1),
        ("1", 0),
        ("[" * 5000, 5000),
    ],
)
def test_nesting_depth_ignores_brackets_inside_strings(text, depth):
    assert wire_json.nesting_depth(text) == depth


def test_a_real_body_is_read_as_before_with_fractions_as_decimals_when_asked():
    text = '{"orders": [{"quantity": 75, "price": 101.05}], "wait": true}'
    assert wire_json.loads(text) == {"orders": [{"quantity": 75, "price": 101.05}], "wait": True}
    assert wire_json.loads(text, decimals=True)["orders"][0]["price"] == Decimal("101.05")


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("[" * 33 + "]" * 33, "nests 33 levels"),
        ("[" * 2000, "nests 2000 levels"),
        ('{"q": ' + "1" * 41 + "}", "number of 41 characters"),
        ('{"q": 1e' + "9" * 40 + "}", "number of 42 characters"),
        ('{"q": 1', "not valid JSON"),
        ("x" * 70_000, "too long"),
    ],
)
def test_a_body_past_a_limit_is_refused_naming_the_limit(text, said):
    with pytest.raises(ValidationFailed, match=said):
        wire_json.loads(text)


def test_bytes_that_are_not_text_are_refused_and_text_is_passed_through():
    assert wire_json.body_text("eyJhIjogMX0=", True) == '{"a": 1}'
    assert wire_json.body_text('{"a": 1}', False) == '{"a": 1}'
    for bad in ("//4=", "not base64!"):
        with pytest.raises(ValidationFailed, match="not UTF-8"):
            wire_json.body_text(bad, True)


@pytest.mark.parametrize("raw", ["1e999999999", "-1e999999999", "1e-999999999", "1e16", "9" * 31, "1e999999"])
def test_a_wire_number_beyond_any_price_or_quantity_is_out_of_range(raw):
    with pytest.raises(ValidationFailed, match="out of range"):
        parse_price(raw, "entry_price")
    with pytest.raises(ValidationFailed, match="out of range"):
        parse_quantity(raw, "disclosed_quantity")


@pytest.mark.parametrize("raw", ["0", "0e999999999", "1500.05", "1e15", "0.000000000000001", 10**15])
def test_numbers_within_range_still_parse(raw):
    assert parse_price(raw, "entry_price") == Decimal(str(raw))
