"""JSON request bodies (SPEC §4): one parser for the DRF views and the async LLM views.

* A bare NaN/Infinity becomes the string "NaN"/"Infinity", so numeric fields reject it with a
  422 naming the field instead of a float NaN reaching the database.
* A string no database column can hold — a NUL character or a lone surrogate (saas_llm.storable;
  the provider client cannot encode the latter either) — and a number too large for a double are
  refused with a 422 naming where they are, before anything is called or written.
* With `exact_numbers`, a JSON number with a fraction or exponent keeps its literal text
  (`JsonNumber`), so a money field parses `4.99999999999999999999` exactly instead of as 5.0.
"""

import json
import math
import re
from typing import Any

from django.conf import settings
from rest_framework.parsers import JSONParser

from saas_llm.errors import BadRequest, RequestTooLarge, RequestValidationError
from saas_llm.storable import unstorable_value

# Escapes that decode to a NUL or to a surrogate half: the only ways either can enter a JSON text,
# since a raw control character is malformed JSON and the body is decoded as strict UTF-8 (which
# json.loads on bytes is not: it lets encoded surrogates through). A match only means "look closer".
_SUSPECT_ESCAPE = re.compile(rb"\\u(?:0000|[dD][89a-fA-F])")


class JsonNumber(float):
    """A JSON number that remembers its literal: `str()` gives it back, so `Decimal(str(value))`
    (what DRF's DecimalField does) is exact. Everything else sees an ordinary float."""

    __slots__ = ("literal",)

    def __new__(cls, literal: str) -> "JsonNumber":
        number = super().__new__(cls, literal)
        number.literal = literal
        return number

    def __getnewargs__(self) -> tuple[str]:
        return (self.literal,)

    def __str__(self) -> str:
        return self.literal


def parse_json(raw: bytes, *, exact_numbers: bool = False) -> Any:
    """Decode a request body. Raises BadRequest (400) for malformed JSON, RequestValidationError
    (422) for a value that cannot be stored."""
    out_of_range = False

    def number(literal: str) -> float:
        nonlocal out_of_range
        value = JsonNumber(literal) if exact_numbers else float(literal)
        if not math.isfinite(value):
            out_of_range = True
        return value

    try:
        data = json.loads(raw.decode("utf-8-sig"), parse_constant=lambda name: name, parse_float=number)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"Malformed JSON: {exc}", code="invalid_request") from None
    except RecursionError:
        raise BadRequest("Malformed JSON: nested too deeply", code="invalid_request") from None
    if out_of_range or _SUSPECT_ESCAPE.search(raw):
        problem = unstorable_value(data)
        if problem is not None:
            path, msg, type_ = problem
            raise RequestValidationError.single(["body", *path], msg, type_)
    return data


class StrictJSONParser(JSONParser):
    """DRF's parser for every management endpoint: `parse_json` with exact numbers, and the body
    size limit that Django applies to `request.body` (DRF reads the stream, which has none)."""

    def parse(self, stream, media_type=None, parser_context=None):
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        raw = stream.read(limit + 1) if limit is not None else stream.read()
        if limit is not None and len(raw) > limit:
            raise RequestTooLarge()
        return parse_json(raw, exact_numbers=True)
