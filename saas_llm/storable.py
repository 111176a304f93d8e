"""Text the database can hold. Postgres text and jsonb refuse a NUL character, and a lone surrogate
cannot be encoded as UTF-8 at all: either one in a row makes the whole write fail.

Input is refused with a 422 (`unstorable_value`, used by the JSON parser); what comes back from a
provider is recorded, never refused, so it is made storable (`storable`).
"""

import math
import re
from typing import Any

_LONE_SURROGATE = re.compile("[\ud800-\udfff]")
REPLACEMENT = "\ufffd"


def string_problem(value: str) -> tuple[str, str] | None:
    """(message, type) when `value` cannot be stored, else None."""
    if "\x00" in value:
        return "Null characters are not allowed.", "value_error.null_characters_not_allowed"
    if _LONE_SURROGATE.search(value):
        return "Unpaired surrogate characters are not allowed.", "value_error.surrogate_characters_not_allowed"
    return None


def unstorable_value(data: Any) -> tuple[list, str, str] | None:
    """(path, message, type) of the first string or number in a JSON value that cannot be stored
    (for a bad key, the path of the object holding it: the key itself is not echoed back).

    Iterative, so a deeply nested value cannot exhaust the stack."""
    stack: list[tuple[Any, list]] = [(data, [])]
    while stack:
        value, path = stack.pop()
        if isinstance(value, dict):
            for key, item in value.items():
                problem = string_problem(key) if isinstance(key, str) else None
                if problem:
                    return path, *problem
                stack.append((item, [*path, key]))
        elif isinstance(value, list):
            stack.extend((item, [*path, index]) for index, item in enumerate(value))
        elif isinstance(value, str):
            problem = string_problem(value)
            if problem:
                return path, *problem
        elif isinstance(value, float) and not math.isfinite(value):
            return path, "number out of range", "value_error.number.not_finite"
    return None


def storable(value: Any) -> Any:
    """`value` with every NUL and lone surrogate replaced by U+FFFD and every non-finite number by
    None (recursively through lists and dicts); unchanged values are returned as they are."""
    if isinstance(value, str):
        if "\x00" in value or _LONE_SURROGATE.search(value):
            return _LONE_SURROGATE.sub(REPLACEMENT, value.replace("\x00", REPLACEMENT))
        return value
    if isinstance(value, dict):
        return {storable(key): storable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [storable(item) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
