"""Serializer fields shared by every app's API: slugs, metadata, money."""

import json
import re
from decimal import Decimal

from rest_framework import serializers

from saas_llm.slugs import SLUG_MAX_LENGTH, SLUG_PATTERN

METADATA_MAX_BYTES = 16 * 1024
METADATA_MAX_DEPTH = 32


class SlugIdField(serializers.RegexField):
    def __init__(self, **kwargs):
        kwargs.setdefault("max_length", SLUG_MAX_LENGTH)
        super().__init__(SLUG_PATTERN, **kwargs)
        self.error_messages["invalid"] = "must match [a-z0-9][a-z0-9_.-]{0,63}"

    def to_internal_value(self, data):
        # An id is a JSON string: a number such as 5 must not silently become the id "5".
        if not isinstance(data, str):
            raise serializers.ValidationError(self.error_messages["invalid"], code="invalid")
        return super().to_internal_value(data)


class MetadataField(serializers.JSONField):
    """A JSON object of at most 16 KB."""

    default_error_messages = {
        "not_a_dict": "must be a JSON object",
        "too_large": f"must be at most {METADATA_MAX_BYTES} bytes when serialised",
        "too_deep": f"must be nested at most {METADATA_MAX_DEPTH} levels deep",
    }

    def __init__(self, **kwargs):
        kwargs.setdefault("required", False)
        super().__init__(**kwargs)

    def to_internal_value(self, data):
        # Checked before any json.dumps: deep nesting would raise RecursionError (a 500). Strings
        # the database cannot hold never get here (saas_llm.parsers refuses them).
        if _too_deep(data):
            self.fail("too_deep")
        data = super().to_internal_value(data)
        if not isinstance(data, dict):
            self.fail("not_a_dict")
        if len(json.dumps(data, separators=(",", ":")).encode()) > METADATA_MAX_BYTES:
            self.fail("too_large")
        return data


def _too_deep(data) -> bool:
    """Whether a parsed JSON value nests deeper than METADATA_MAX_DEPTH (iterative: no recursion)."""
    stack = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict | list):
            if depth > METADATA_MAX_DEPTH:
                return True
            stack.extend((item, depth + 1) for item in (value.values() if isinstance(value, dict) else value))
    return False


# A numeric string, ASCII only: Python's Decimal() would also take "١" (an Arabic-Indic one),
# "1_000" and surrounding whitespace.
_DECIMAL_TEXT = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?", re.ASCII)


class ExactDecimalField(serializers.DecimalField):
    """A JSON number or numeric string, parsed exactly: a JSON number keeps its literal
    (saas_llm.parsers.JsonNumber), so too many decimals are a 422, never a silent rounding."""

    def to_internal_value(self, data):
        if isinstance(data, bool) or not isinstance(data, str | int | float):
            self.fail("invalid")
        if not _DECIMAL_TEXT.fullmatch(str(data)):
            self.fail("invalid")
        return super().to_internal_value(data)


class CreditsField(ExactDecimalField):
    """Credits: a JSON number or numeric string, at most 4 decimal places, rendered as a number."""

    def __init__(self, **kwargs):
        kwargs.setdefault("max_digits", 24)
        kwargs.setdefault("decimal_places", 4)
        kwargs.setdefault("coerce_to_string", False)
        kwargs.setdefault("max_value", Decimal(10) ** 9)
        super().__init__(**kwargs)


class UsdField(ExactDecimalField):
    """USD: at most 9 decimal places, rendered as a number."""

    def __init__(self, **kwargs):
        kwargs.setdefault("max_digits", 30)
        kwargs.setdefault("decimal_places", 9)
        kwargs.setdefault("coerce_to_string", False)
        super().__init__(**kwargs)


class StrictBooleanField(serializers.BooleanField):
    """Only JSON true/false: 'yes', 1 or "true" are type errors, not silently coerced."""

    def to_internal_value(self, data):
        if isinstance(data, bool):
            return data
        self.fail("invalid", input=data)


class StrictIntegerField(serializers.IntegerField):
    """Only JSON integers (no "5", no 5.0, no true)."""

    def to_internal_value(self, data):
        if isinstance(data, bool) or not isinstance(data, int):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictFloatField(serializers.FloatField):
    """A JSON number (not a numeric string, not a boolean)."""

    def to_internal_value(self, data):
        if isinstance(data, bool) or not isinstance(data, int | float):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictCharField(serializers.CharField):
    """Only JSON strings (numbers are not turned into text)."""

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)
