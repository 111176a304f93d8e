"""The bodies of the two hot LLM routes (SPEC §5.2), validated without DRF; only parameters the
client sent are forwarded to the provider.

`validate_llm_call` (POST /api/jobs/{id}/llm-call and -stream) and `validate_chat_completion`
(POST /v1/chat/completions) return exactly what the DRF serializers they replaced returned — same
keys, values and types — and raise the same 422 errors (same loc, msg, type and order), quirks
included; tests/test_llm_schema.py pins both to a corpus captured from those serializers. They take
what `saas_llm.parsers.parse_json` produces.

The checks are plain Python because the behaviour to keep is DRF's: strings are trimmed before
their length is checked, "yes" and 1.0 are booleans, a choice is looked up by `str()`, and every
failing check of a field is reported, in the serializers' field order. pydantic-core would need a
Python callback at nearly every leaf to do the same; written out, a typical body takes about a
tenth of the serializers' time.

The same declarations generate the pydantic models that document the bodies with drf-spectacular's
pydantic contrib: `@extend_schema(request=LLMCallIn)` and `@extend_schema(request=ChatCompletionIn)`.
Their components keep the serializers' names and shapes (OpenAPI 3.0: `nullable`, no `title`), and
add the list bounds the serializers did not document. They only document: validate with the
functions above (`model_validate` would apply pydantic's own, different rules).
"""

import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Annotated, Any, NoReturn

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema, create_model

from saas_llm.errors import RequestValidationError
from saas_llm.fields import METADATA_MAX_BYTES, METADATA_MAX_DEPTH, _too_deep  # MetadataField's own check
from saas_llm.slugs import SLUG_MAX_LENGTH, SLUG_PATTERN

__all__ = [
    "ChatCompletionIn",
    "FunctionCallInRequest",
    "FunctionDefInRequest",
    "LLMCallIn",
    "MessageInRequest",
    "StreamOptionsInRequest",
    "ToolCallInRequest",
    "ToolInRequest",
    "validate_chat_completion",
    "validate_llm_call",
]

ROLES = ("system", "developer", "user", "assistant", "tool")
# The provider parameters forwarded exactly as the client sent them (no forced defaults).
FORWARDED_PARAMS = (
    "temperature",
    "max_tokens",
    "top_p",
    "stop",
    "presence_penalty",
    "frequency_penalty",
    "seed",
    "response_format",
    "tools",
    "tool_choice",
)
OPENAI_PARAMS = (*FORWARDED_PARAMS, "max_completion_tokens", "parallel_tool_calls", "user")
TOOL_CHOICES = ("none", "auto", "required")

_MISSING: Any = object()  # a key the client did not send (None is a sent null)
_SURROGATE = re.compile("[\ud800-\udfff]")
_SLUG = re.compile(SLUG_PATTERN)
# MetadataField's size measure, and its JSONField's "valid JSON" test (DRF's json refuses NaN and
# infinities, which parse_json never lets through anyway): one encoding serves both.
_COMPACT_JSON = json.JSONEncoder(separators=(",", ":"), allow_nan=False)

_Error = tuple[tuple[str | int, ...], str, str]  # (loc below the value, msg, type)


class _Invalid(Exception):
    """The errors of one value, their locations relative to it (prefixed on the way up)."""

    def __init__(self, errors: list[_Error]):
        self.errors = errors

    def under(self, key: str | int) -> list[_Error]:
        return [((key, *loc), msg, type_) for loc, msg, type_ in self.errors]


def _fail(msg: str, type_: str) -> NoReturn:
    raise _Invalid([((), msg, type_)])


def _bounded(number: float, ge: float | None, le: float | None) -> Any:
    """Django's Max/MinValueValidator, in DRF's order (max first)."""
    if le is not None and number > le:
        _fail(f"Ensure this value is less than or equal to {le}.", "value_error.number.not_le")
    if ge is not None and number < ge:
        _fail(f"Ensure this value is greater than or equal to {ge}.", "value_error.number.not_ge")
    return number


def _documented(python_type: Any, schema: dict[str, Any]) -> Any:
    return Annotated[python_type, WithJsonSchema(schema)]


class _Spec:
    """One kind of value: `check` returns it as DRF's field did (or raises `_Invalid`); `annotation`
    documents it. `nullable` is DRF's allow_null: the object lets a null through unchecked."""

    nullable = False

    def check(self, value: Any) -> Any:
        raise NotImplementedError

    def annotation(self) -> Any:
        raise NotImplementedError


class _Char(_Spec):
    """StrictCharField: only strings; trimmed (unless trim=False) before the length checks, and a
    string that is blank once trimmed is "blank" whatever its length."""

    not_a_string = "Not a valid string."

    def __init__(self, max_length: int | None = None, *, allow_blank=False, trim=True, nullable=False):
        self.max_length, self.allow_blank, self.trim, self.nullable = max_length, allow_blank, trim, nullable

    def check(self, value: Any) -> Any:
        # DRF tests blankness first, on str(value): a number is never blank, so it gets the type error.
        if value == "" or (self.trim and str(value).strip() == ""):
            if self.allow_blank:
                return ""
            _fail("This field may not be blank.", "value_error.any_str.min_length")
        if not isinstance(value, str):
            _fail(self.not_a_string, "type_error")
        text = str(value).strip() if self.trim else str(value)
        errors = self.problems(text)
        if errors:
            raise _Invalid(errors)
        return text

    def problems(self, text: str) -> list[_Error]:
        """Every failing validator, in DRF's order (all are reported, not just the first)."""
        errors: list[_Error] = []
        if self.max_length is not None and len(text) > self.max_length:
            msg = f"Ensure this field has no more than {self.max_length} characters."
            errors.append(((), msg, "value_error.any_str.max_length"))
        if "\x00" in text:
            errors.append(((), "Null characters are not allowed.", "value_error.null_characters_not_allowed"))
        surrogate = _SURROGATE.search(text)
        if surrogate:
            msg = f"Surrogate characters are not allowed: U+{ord(surrogate.group()):X}."
            errors.append(((), msg, "value_error.surrogate_characters_not_allowed"))
        return errors

    def schema(self) -> dict[str, Any]:
        schema: dict[str, Any] = {"type": "string"}
        if self.nullable:
            schema["nullable"] = True
        if not self.allow_blank:
            schema["minLength"] = 1
        if self.max_length is not None:
            schema["maxLength"] = self.max_length
        return schema

    def annotation(self) -> Any:
        return _documented(str | None if self.nullable else str, self.schema())


class _Slug(_Char):
    """SlugIdField. Its pattern error is DRF RegexField's generic message: the field's own message
    is set after the regex validator was built, so only a non-string gets it."""

    not_a_string = "must match [a-z0-9][a-z0-9_.-]{0,63}"

    def __init__(self, *, nullable=False):
        super().__init__(SLUG_MAX_LENGTH, nullable=nullable)

    def problems(self, text: str) -> list[_Error]:
        errors = super().problems(text)
        if not _SLUG.search(text):
            errors.append(((), "This value does not match the required pattern.", "type_error"))
        return errors

    def schema(self) -> dict[str, Any]:
        return {**super().schema(), "pattern": SLUG_PATTERN}


class _Float(_Spec):
    """StrictFloatField: a JSON number (an int is accepted and becomes a float), never a bool."""

    def __init__(self, ge: float | None = None, le: float | None = None):
        self.ge, self.le = ge, le

    def check(self, value: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            _fail("A valid number is required.", "type_error")
        try:
            number = float(value)
        except OverflowError:  # an int beyond a double's range
            _fail("Integer value too large to convert to float", "value_error.overflow")
        if not math.isfinite(number):
            _fail("A valid number is required.", "type_error")
        return _bounded(number, self.ge, self.le)

    def annotation(self) -> Any:
        schema = {"type": "number", "format": "double", "maximum": self.le, "minimum": self.ge}
        return _documented(float, {key: value for key, value in schema.items() if value is not None})


class _Int(_Spec):
    """StrictIntegerField: a JSON integer, never a bool or 5.0."""

    def __init__(self, ge: int | None = None, le: int | None = None):
        self.ge, self.le = ge, le

    def check(self, value: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, int):
            _fail("A valid integer is required.", "type_error")
        try:
            number = int(str(value))  # DRF's round trip: an int too long to print (4300+ digits) is invalid
        except ValueError:
            _fail("A valid integer is required.", "type_error")
        return _bounded(number, self.ge, self.le)

    def annotation(self) -> Any:
        schema = {"type": "integer", "maximum": self.le, "minimum": self.ge}
        return _documented(int, {key: value for key, value in schema.items() if value is not None})


class _Bool(_Spec):
    """DRF's lenient BooleanField: true/false, 1/0 (and 1.0/0.0), and the strings "true", "yes",
    "on", "t", "y", "1" (or their negations) in any case; "null" and "" are null if nullable."""

    # DRF's sets; 1 also matches True and 1.0 (equal and hashed alike), 0 matches False and 0.0.
    TRUE = frozenset({"t", "y", "yes", "true", "on", "1", 1})
    FALSE = frozenset({"f", "n", "no", "false", "off", "0", 0})
    NULL = frozenset({"null", "", None})

    def __init__(self, *, nullable=False):
        self.nullable = nullable

    def check(self, value: Any) -> Any:
        key = value.lower() if isinstance(value, str) else value
        try:
            if key in self.TRUE:
                return True
            if key in self.FALSE:
                return False
            if self.nullable and key in self.NULL:
                return None
        except TypeError:  # unhashable: a list or an object
            pass
        _fail("Must be a valid boolean.", "type_error")

    def annotation(self) -> Any:
        schema: dict[str, Any] = {"type": "boolean", "nullable": True} if self.nullable else {"type": "boolean"}
        return _documented(bool | None if self.nullable else bool, schema)


class _Choice(_Spec):
    """ChoiceField: looked up by `str(value)`, so only the exact strings match."""

    def __init__(self, choices: tuple[str, ...]):
        self.choices = choices
        self.lookup = frozenset(choices)

    def check(self, value: Any) -> Any:
        text = str(value)
        if text in self.lookup:
            return text
        _fail(f'"{value}" is not a valid choice.', "value_error.enum")

    def annotation(self) -> Any:
        # The description is drf-spectacular's: its enum hook moves it into the RoleEnum/TypeEnum component.
        description = "\n".join(f"* `{choice}` - {choice}" for choice in self.choices)
        return _documented(str, {"type": "string", "enum": list(self.choices), "description": description})


class _Dict(_Spec):
    """DictField: any JSON object, returned as a shallow copy."""

    def check(self, value: Any) -> Any:
        if not isinstance(value, dict):
            _fail(f'Expected a dictionary of items but got type "{type(value).__name__}".', "type_error.dict")
        return {str(key): item for key, item in value.items()}

    def annotation(self) -> Any:
        return _documented(dict[str, Any], {"type": "object", "additionalProperties": {}})


def _valid_part(part: Any) -> bool:
    """An OpenAI content part: {"type": "text", "text": "…"} or another typed part carrying its payload."""
    if not isinstance(part, dict) or not isinstance(part.get("type"), str):
        return False
    if part["type"] == "text":
        return isinstance(part.get("text"), str)
    return part["type"] in part  # e.g. {"type": "image_url", "image_url": {...}}


class _Content(_Spec):
    """A message's content: a string or a list of content parts (kept as sent), or null."""

    nullable = True

    def check(self, value: Any) -> Any:
        if isinstance(value, str) or (isinstance(value, list) and all(_valid_part(part) for part in value)):
            return value
        _fail("must be a string or a list of content parts", "type_error")

    def annotation(self) -> Any:
        parts = {"type": "array", "items": {"type": "object", "additionalProperties": True}}
        return _documented(str | list[dict[str, Any]] | None, {"oneOf": [{"type": "string"}, parts], "nullable": True})


class _Stop(_Spec):
    """A stop sequence or a list of at most 4."""

    def __init__(self, *, nullable=False):
        self.nullable = nullable

    def check(self, value: Any) -> Any:
        if isinstance(value, str):
            return value
        if isinstance(value, list) and len(value) <= 4 and all(isinstance(item, str) for item in value):
            return value
        _fail("must be a string or a list of at most 4 strings", "type_error")

    def annotation(self) -> Any:
        schema: dict[str, Any] = {
            "oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}, "maxItems": 4}]
        }
        if self.nullable:
            schema["nullable"] = True
        return _documented(str | list[str] | None if self.nullable else str | list[str], schema)


class _ToolChoice(_Spec):
    """'none', 'auto', 'required' or any object (the provider checks its shape)."""

    def check(self, value: Any) -> Any:
        if value in TOOL_CHOICES or isinstance(value, dict):
            return value
        _fail("must be 'none', 'auto', 'required' or an object", "type_error")

    def annotation(self) -> Any:
        schema = {
            "oneOf": [
                {"type": "string", "enum": list(TOOL_CHOICES)},
                {"type": "object", "additionalProperties": True},
            ]
        }
        return _documented(str | dict[str, Any], schema)


class _Metadata(_Spec):
    """MetadataField: a JSON object of at most 16 KB (compact, ASCII-escaped), nesting checked first."""

    def check(self, value: Any) -> Any:
        if _too_deep(value):  # before any json.dumps, which would recurse
            _fail(f"must be nested at most {METADATA_MAX_DEPTH} levels deep", "value_error.too_deep")
        try:
            text = _COMPACT_JSON.encode(value)
        except (TypeError, ValueError):
            _fail("Value must be valid JSON.", "type_error")
        if not isinstance(value, dict):
            _fail("must be a JSON object", "type_error.dict")
        if len(text.encode()) > METADATA_MAX_BYTES:
            _fail(f"must be at most {METADATA_MAX_BYTES} bytes when serialised", "value_error.too_large")
        return value

    def annotation(self) -> Any:
        description = (
            f"A JSON object of at most {METADATA_MAX_BYTES} bytes when serialised, "
            f"nested at most {METADATA_MAX_DEPTH} levels deep."
        )
        schema = {"type": "object", "additionalProperties": {}, "description": description}
        return _documented(dict[str, Any], schema)


@dataclass(frozen=True, slots=True)
class _Field:
    name: str
    spec: _Spec
    required: bool = False
    default: Any = _MISSING  # what a missing optional field becomes; by default it stays missing


def _docs_schema(schema: dict[str, Any]) -> None:
    """Pydantic titles every schema and gives optional fields `default: null`; the serializers'
    components had neither (here a missing field is not a null one: it stays missing), and listed
    `required` sorted."""
    schema.pop("title", None)
    if "required" in schema:
        schema["required"] = sorted(schema["required"])
    for prop in schema.get("properties", {}).values():
        prop.pop("title", None)
        if "default" in prop and prop["default"] is None:
            del prop["default"]


class _Documented(BaseModel):
    """The base of the generated models: their JSON schemas are tidied as components (above)."""

    model_config = ConfigDict(json_schema_extra=_docs_schema)


class _Object(_Spec):
    """A nested serializer: its fields in declaration order (the order of the output keys and of
    the errors), keys it does not know ignored, only the keys sent (or defaulted) returned. `after`
    is `Serializer.validate`: it runs only when every field is valid."""

    def __init__(
        self, name: str, fields: list[_Field], *, doc: str | None = None, after: Callable[[dict], None] | None = None
    ):
        self.name, self.fields, self.doc, self.after = name, fields, doc, after

    def check(self, value: Any) -> Any:
        if not isinstance(value, Mapping):
            _fail(f"Invalid data. Expected a dictionary, but got {type(value).__name__}.", "type_error")
        out: dict[str, Any] = {}
        errors: list[_Error] = []
        for field in self.fields:
            item = value.get(field.name, _MISSING)
            if item is _MISSING:
                if field.required:
                    errors.append(((field.name,), "field required", "value_error.missing"))
                elif field.default is not _MISSING:
                    out[field.name] = field.default
            elif item is None:
                if field.spec.nullable:
                    out[field.name] = None
                else:
                    errors.append(((field.name,), "This field may not be null.", "type_error.none.not_allowed"))
            else:
                try:
                    out[field.name] = field.spec.check(item)
                except _Invalid as exc:
                    errors.extend(exc.under(field.name))
        if errors:
            raise _Invalid(errors)
        if self.after is not None:
            self.after(out)
        return out

    @cached_property
    def model(self) -> type[BaseModel]:
        fields = {
            field.name: (
                field.spec.annotation(),
                ... if field.required else (None if field.default is _MISSING else field.default),
            )
            for field in self.fields
        }
        return create_model(self.name, __base__=_Documented, __doc__=self.doc, __module__=__name__, **fields)

    def annotation(self) -> Any:
        return self.model


class _Many(_Spec):
    """A list serializer: the list's own checks first, then every item's errors under its index."""

    def __init__(self, item: _Object, *, max_length: int, allow_empty=True):
        self.item, self.max_length, self.allow_empty = item, max_length, allow_empty

    def check(self, value: Any) -> Any:
        if not isinstance(value, list):
            _fail(f'Expected a list of items but got type "{type(value).__name__}".', "type_error.list")
        if not value and not self.allow_empty:
            _fail("This list may not be empty.", "value_error.list.min_items")
        if len(value) > self.max_length:
            _fail(f"Ensure this field has no more than {self.max_length} elements.", "value_error.any_str.max_length")
        out = []
        errors: list[_Error] = []
        for index, item in enumerate(value):
            if item is None:
                errors.append(((index,), "This field may not be null.", "type_error.none.not_allowed"))
                continue
            try:
                out.append(self.item.check(item))
            except _Invalid as exc:
                errors.extend(exc.under(index))
        if errors:
            raise _Invalid(errors)
        return out

    def annotation(self) -> Any:
        min_length = None if self.allow_empty else 1
        return Annotated[list[self.item.model], Field(min_length=min_length, max_length=self.max_length)]


def _content_or_tool_calls(message: dict) -> None:
    """MessageIn.validate: content may only be missing or null on a message with tool calls."""
    if message.get("content") is None and not message.get("tool_calls"):
        raise _Invalid([(("content",), "field required", "value_error.missing")])


_FUNCTION_CALL = _Object(
    "FunctionCallInRequest",
    [
        _Field("name", _Char(256), required=True),
        _Field("arguments", _Char(allow_blank=True, trim=False), required=True),
    ],
)
_TOOL_CALL = _Object(
    "ToolCallInRequest",
    [
        _Field("id", _Char(256), required=True),
        _Field("type", _Choice(("function",)), required=True),
        _Field("function", _FUNCTION_CALL, required=True),
    ],
    doc="A tool call of an assistant message, in OpenAI's shape (what providers accept back).",
)
_FUNCTION_DEF = _Object(
    "FunctionDefInRequest",
    [
        _Field("name", _Char(64), required=True),
        _Field("description", _Char(allow_blank=True, trim=False)),
        _Field("parameters", _Dict()),
        _Field("strict", _Bool(nullable=True)),
    ],
)
_TOOL = _Object(
    "ToolInRequest",
    [_Field("type", _Choice(("function",)), required=True), _Field("function", _FUNCTION_DEF, required=True)],
    doc='A tool definition: {"type": "function", "function": {"name", "description"?, "parameters"?}}.',
)
_MESSAGE = _Object(
    "MessageInRequest",
    [
        _Field("role", _Choice(ROLES), required=True),
        _Field("content", _Content()),
        _Field("name", _Char(256)),
        _Field("tool_calls", _Many(_TOOL_CALL, max_length=128)),
        _Field("tool_call_id", _Char(256)),
    ],
    after=_content_or_tool_calls,
)
_MESSAGES = _Many(_MESSAGE, max_length=2048, allow_empty=False)
_TOOLS = _Many(_TOOL, max_length=128)
_TEMPERATURE = _Float(0, 2)
_MAX_TOKENS = _Int(1, 1_000_000)
_TOP_P = _Float(0, 1)
_PENALTY = _Float(-2, 2)

_LLM_CALL = _Object(
    "LLMCallIn",
    [
        _Field("messages", _MESSAGES, required=True),
        _Field("model", _Slug(nullable=True)),
        _Field("purpose", _Char(200, allow_blank=True, nullable=True)),
        _Field("temperature", _TEMPERATURE),
        _Field("max_tokens", _MAX_TOKENS),
        _Field("top_p", _TOP_P),
        _Field("stop", _Stop()),
        _Field("presence_penalty", _PENALTY),
        _Field("frequency_penalty", _PENALTY),
        _Field("seed", _Int()),
        _Field("response_format", _Dict()),
        _Field("tools", _TOOLS),
        _Field("tool_choice", _ToolChoice()),
        _Field("metadata", _Metadata()),
    ],
)
_STREAM_OPTIONS = _Object("StreamOptionsInRequest", [_Field("include_usage", _Bool(), default=False)])
_CHAT_COMPLETION = _Object(
    "ChatCompletionIn",
    [
        _Field("model", _Slug(), required=True),
        _Field("messages", _MESSAGES, required=True),
        _Field("stream", _Bool(), default=False),
        _Field("stream_options", _STREAM_OPTIONS),
        _Field("temperature", _TEMPERATURE),
        _Field("max_tokens", _MAX_TOKENS),
        _Field("max_completion_tokens", _MAX_TOKENS),
        _Field("top_p", _TOP_P),
        _Field("stop", _Stop(nullable=True)),
        _Field("presence_penalty", _PENALTY),
        _Field("frequency_penalty", _PENALTY),
        _Field("seed", _Int()),
        _Field("response_format", _Dict()),
        _Field("tools", _TOOLS),
        _Field("tool_choice", _ToolChoice()),
        _Field("parallel_tool_calls", _Bool()),
        _Field("user", _Char(255)),
        _Field("n", _Int(1, 1)),
    ],
)


def _validate(spec: _Object, data: Any) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise RequestValidationError.single(["body"], "value is not a valid dict", "type_error.dict")
    try:
        return spec.check(data)
    except _Invalid as exc:
        errors = [{"loc": ["body", *loc], "msg": msg, "type": type_} for loc, msg, type_ in exc.errors]
        raise RequestValidationError(errors) from None


def validate_llm_call(data: Any) -> dict[str, Any]:
    """The body of POST /api/jobs/{id}/llm-call(-stream): the fields sent, validated; 422 otherwise."""
    return _validate(_LLM_CALL, data)


def validate_chat_completion(data: Any) -> dict[str, Any]:
    """The body of POST /v1/chat/completions (`stream` defaults to false); 422 otherwise."""
    return _validate(_CHAT_COMPLETION, data)


# The documentation models. drf-spectacular names a request component after its model plus "Request"
# (COMPONENT_SPLIT_REQUEST), but takes the nested ones (pydantic's $defs) as they are: so LLMCallIn
# and ChatCompletionIn become LLMCallInRequest and ChatCompletionInRequest, as with the serializers.
FunctionCallInRequest = _FUNCTION_CALL.model
ToolCallInRequest = _TOOL_CALL.model
FunctionDefInRequest = _FUNCTION_DEF.model
ToolInRequest = _TOOL.model
MessageInRequest = _MESSAGE.model
StreamOptionsInRequest = _STREAM_OPTIONS.model
LLMCallIn = _LLM_CALL.model
ChatCompletionIn = _CHAT_COMPLETION.model


def forwarded_params(data: dict, names: tuple[str, ...] = FORWARDED_PARAMS) -> dict:
    """The provider parameters of a validated body, exactly as the client sent them."""
    return {name: data[name] for name in names if name in data}
