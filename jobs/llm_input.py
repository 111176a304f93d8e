"""Validation of an LLM-call body (SPEC §5.2). Only parameters the client sent are forwarded."""

from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from saas_llm.fields import MetadataField, SlugIdField, StrictCharField, StrictFloatField, StrictIntegerField

ROLES = ("system", "developer", "user", "assistant", "tool")
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


def _valid_part(part: Any) -> bool:
    """An OpenAI content part: {"type": "text", "text": "…"} or another typed part carrying its payload."""
    if not isinstance(part, dict) or not isinstance(part.get("type"), str):
        return False
    if part["type"] == "text":
        return isinstance(part.get("text"), str)
    return part["type"] in part  # e.g. {"type": "image_url", "image_url": {...}}


@extend_schema_field(
    {
        "oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "object", "additionalProperties": True}}],
        "nullable": True,
    }
)
class ContentField(serializers.Field):
    """A string, a list of content parts (objects), or null (assistant messages with tool calls)."""

    default_error_messages = {"invalid": "must be a string or a list of content parts"}

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, str):
            return data
        if isinstance(data, list) and all(_valid_part(part) for part in data):
            return data
        self.fail("invalid")

    def to_representation(self, value: Any) -> Any:
        return value


@extend_schema_field({"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}, "maxItems": 4}]})
class StopField(serializers.Field):
    default_error_messages = {"invalid": "must be a string or a list of at most 4 strings"}

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, str):
            return data
        if isinstance(data, list) and len(data) <= 4 and all(isinstance(item, str) for item in data):
            return data
        self.fail("invalid")

    def to_representation(self, value: Any) -> Any:
        return value


@extend_schema_field(
    {
        "oneOf": [
            {"type": "string", "enum": ["none", "auto", "required"]},
            {"type": "object", "additionalProperties": True},
        ]
    }
)
class ToolChoiceField(serializers.Field):
    default_error_messages = {"invalid": "must be 'none', 'auto', 'required' or an object"}

    def to_internal_value(self, data: Any) -> Any:
        if data in ("none", "auto", "required") or isinstance(data, dict):
            return data
        self.fail("invalid")

    def to_representation(self, value: Any) -> Any:
        return value


class FunctionCallIn(serializers.Serializer):
    name = StrictCharField(max_length=256)
    arguments = StrictCharField(allow_blank=True, trim_whitespace=False)


class ToolCallIn(serializers.Serializer):
    """A tool call of an assistant message, in OpenAI's shape (what providers accept back)."""

    id = StrictCharField(max_length=256)
    type = serializers.ChoiceField(choices=["function"])
    function = FunctionCallIn()


class FunctionDefIn(serializers.Serializer):
    name = StrictCharField(max_length=64)
    description = StrictCharField(required=False, allow_blank=True, trim_whitespace=False)
    parameters = serializers.DictField(required=False)
    strict = serializers.BooleanField(required=False, allow_null=True)

    def to_internal_value(self, data: Any) -> Any:
        value = super().to_internal_value(data)
        return {key: value[key] for key in ("name", "description", "parameters", "strict") if key in value}


class ToolIn(serializers.Serializer):
    """A tool definition: {"type": "function", "function": {"name", "description"?, "parameters"?}}."""

    type = serializers.ChoiceField(choices=["function"])
    function = FunctionDefIn()


class MessageIn(serializers.Serializer):
    role = serializers.ChoiceField(choices=ROLES)
    content = ContentField(required=False, allow_null=True)
    name = StrictCharField(max_length=256, required=False)
    tool_calls = ToolCallIn(many=True, required=False, max_length=128)
    tool_call_id = StrictCharField(max_length=256, required=False)

    def validate(self, data: dict) -> dict:
        if data.get("content") is None and not data.get("tool_calls"):
            raise serializers.ValidationError({"content": [serializers.ErrorDetail("field required", code="required")]})
        return data

    def to_internal_value(self, data: Any) -> Any:
        value = super().to_internal_value(data)
        # Keep only the keys the client sent (a missing content stays missing, null stays null).
        return {key: value[key] for key in ("role", "content", "name", "tool_calls", "tool_call_id") if key in value}


class LLMCallIn(serializers.Serializer):
    messages = MessageIn(many=True, allow_empty=False, max_length=2048)
    model = SlugIdField(required=False, allow_null=True)
    purpose = StrictCharField(max_length=200, required=False, allow_blank=True, allow_null=True)
    temperature = StrictFloatField(required=False, min_value=0, max_value=2)
    max_tokens = StrictIntegerField(required=False, min_value=1, max_value=1_000_000)
    top_p = StrictFloatField(required=False, min_value=0, max_value=1)
    stop = StopField(required=False)
    presence_penalty = StrictFloatField(required=False, min_value=-2, max_value=2)
    frequency_penalty = StrictFloatField(required=False, min_value=-2, max_value=2)
    seed = StrictIntegerField(required=False)
    response_format = serializers.DictField(required=False)
    tools = ToolIn(many=True, required=False, max_length=128)
    tool_choice = ToolChoiceField(required=False)
    metadata = MetadataField()


def forwarded_params(data: dict) -> dict:
    """The provider parameters exactly as the client sent them (no forced defaults)."""
    return {name: data[name] for name in FORWARDED_PARAMS if name in data}
