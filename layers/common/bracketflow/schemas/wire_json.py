"""JSON from strangers, read with limits: no body can make a request slow or crash the parser.

Python's json module recurses once per nesting level (a body of 2000 "[" is a RecursionError), turns any run of
digits into an int (thousands of digits are slow, and past 4300 a ValueError), and reads any size it is given. Every
body that arrives over HTTP is read here instead, and each of those cases is a ValidationFailed (400) that says
which limit the body broke. Nothing a placement needs comes near the limits.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable
from decimal import Decimal
from itertools import accumulate
from typing import Any

from bracketflow.errors import ValidationFailed

MAX_BODY_CHARS = 65_536  # a batch of 10 legs is under 3 KB
MAX_DEPTH = 32  # the deepest real body (a batch: object > orders > leg > value) is 3
MAX_NUMBER_CHARS = 40  # DynamoDB numbers keep 38 digits; prices and quantities need far fewer

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}


def nesting_depth(text: str) -> int:
    """How deep arrays and objects nest in `text`, ignoring brackets inside strings. Linear, no recursion."""
    brackets = _NOT_BRACKET.sub("", _STRING.sub("", text))
    return max(accumulate(_STEP[c] for c in brackets), default=0)


def _number(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    def read(literal: str) -> Any:
        if len(literal) > MAX_NUMBER_CHARS:
            raise ValidationFailed(f"body has a number of {len(literal)} characters: at most {MAX_NUMBER_CHARS}")
        return parse(literal)

    return read


def loads(text: str, *, max_chars: int = MAX_BODY_CHARS, decimals: bool = False, what: str = "body") -> Any:
    """Parse JSON text within the limits above; ValidationFailed naming the broken limit, or saying it is not JSON.

    decimals=True reads fractions as Decimal (prices are never floats in the domain)."""
    if len(text) > max_chars:
        raise ValidationFailed(f"{what} is too long: at most {max_chars} characters")
    depth = nesting_depth(text)
    if depth > MAX_DEPTH:
        raise ValidationFailed(f"{what} nests {depth} levels deep: at most {MAX_DEPTH}")
    try:
        return json.loads(text, parse_int=_number(int), parse_float=_number(Decimal if decimals else float))
    except (ValueError, RecursionError):  # JSONDecodeError is a ValueError
        raise ValidationFailed(f"{what} is not valid JSON") from None


def body_text(body: str | None, is_base64: bool | None) -> str | None:
    """The request body as text: API Gateway hands over bytes that are not text as base64, and those are refused."""
    if body is None or not is_base64:
        return body
    try:
        return base64.b64decode(body.encode("ascii"), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeError):
        raise ValidationFailed("body is not UTF-8 text: send JSON") from None
