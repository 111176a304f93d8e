"""jobs.llm_schema against the DRF serializers it replaces (LLMCallIn, ChatCompletionIn).

Every body of CORPUS goes through both validators; tests/data/llm_schema_corpus.json holds what
`validate_data(<serializer>, body, "body")` answered for it — the validated data or the 422 errors
(loc, msg, type, in order) — captured from the serializers before they were removed. Outputs over a few KB (the 2048-message bodies) are kept as a SHA-256 of their JSON.
Bodies are what saas_llm.parsers.parse_json produces; `parsed(...)` cases go through it for real.
"""

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pydantic.json_schema import model_json_schema

from jobs import llm_schema
from saas_llm.errors import RequestValidationError
from saas_llm.parsers import parse_json

GOLDEN_PATH = Path(__file__).parent / "data" / "llm_schema_corpus.json"
DIGEST_OVER = 4096  # characters of JSON: larger outputs are stored as their SHA-256

HELLO = [{"role": "user", "content": "hi"}]


def ok(**fields: Any) -> dict[str, Any]:
    """A valid body for both routes, plus `fields` (None values are kept: they are sent nulls)."""
    return {"model": "chat-fast", "messages": HELLO, **fields}


def msg(**fields: Any) -> dict[str, Any]:
    """A body whose only message is `fields`."""
    return ok(messages=[fields])


def call(**fields: Any) -> dict[str, Any]:
    """An assistant message with one tool call (id, type, function overridable)."""
    tool_call = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}, **fields}
    return msg(role="assistant", content=None, tool_calls=[tool_call])


def tool(**function: Any) -> dict[str, Any]:
    return ok(tools=[{"type": "function", "function": function}])


def parsed(raw: str, *, exact_numbers: bool = False) -> Any:
    return parse_json(raw.encode(), exact_numbers=exact_numbers)


def variants(prefix: str, build: Callable[[Any], Any], values: dict[str, Any]) -> dict[str, Any]:
    """One case per value: `build(value)` named prefix-label."""
    return {f"{prefix}-{label}": build(value) for label, value in values.items()}


def nested(depth: int, container: str = "dict") -> Any:
    """`depth` levels of objects (or arrays) around a string."""
    value: Any = "leaf"
    for _ in range(depth):
        value = {"a": value} if container == "dict" else [value]
    return value


NAMED = {"name": "f", "arguments": "{}"}
FULL_CALL = [
    {"role": "system", "content": "Be brief."},
    {"role": "developer", "content": "Answer in French.", "name": "dev"},
    {
        "role": "user",
        "content": [
            {"type": "text", "text": "What is this?"},
            {"type": "image_url", "image_url": {"url": "https://x/y.png", "detail": "low"}},
            {"type": "input_audio", "input_audio": {"data": "AAA", "format": "wav"}},
        ],
    },
    {"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "type": "function", "function": NAMED}]},
    {"role": "tool", "content": "42", "tool_call_id": "c1"},
]
TOOLS = [
    {"type": "function", "function": {"name": "f"}},
    {
        "type": "function",
        "function": {"name": "g", "description": "Gets", "parameters": {"type": "object"}, "strict": True},
    },
]
EVERY_LLM_PARAM = {
    "messages": FULL_CALL,
    "model": "chat-fast",
    "purpose": "summary",
    "temperature": 0.7,
    "max_tokens": 256,
    "top_p": 0.9,
    "stop": ["\n\n", "END"],
    "presence_penalty": -0.5,
    "frequency_penalty": 0.5,
    "seed": 42,
    "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}},
    "tools": TOOLS,
    "tool_choice": {"type": "function", "function": {"name": "f"}},
    "metadata": {"ticket": "T-1", "tags": ["a", "b"], "n": 1.5},
}
EVERY_CHAT_PARAM = {
    **{key: value for key, value in EVERY_LLM_PARAM.items() if key not in ("purpose", "metadata")},
    "stream": True,
    "stream_options": {"include_usage": True},
    "max_completion_tokens": 100,
    "parallel_tool_calls": False,
    "user": "end-user-1",
    "n": 1,
}
INVALID_EVERYWHERE = {
    "messages": [{"role": "robot"}, {"role": "user", "content": 5, "name": ""}, None],
    "model": "Bad Model",
    "purpose": 5,
    "temperature": "hot",
    "max_tokens": 0,
    "top_p": 1.5,
    "stop": 5,
    "presence_penalty": True,
    "frequency_penalty": -3,
    "seed": 1.5,
    "response_format": "json",
    "tools": "all",
    "tool_choice": "sometimes",
    "metadata": [],
    "stream": "maybe",
    "stream_options": [],
    "max_completion_tokens": "5",
    "parallel_tool_calls": "x",
    "user": "",
    "n": 2,
}
BIG_METADATA = {"k": "x" * (16 * 1024 - 8)}  # exactly 16384 bytes compact: {"k":"…"}
ESCAPED_METADATA = {"k": "é" * 2729}  # 8 + 2729 * 6 = 16382 bytes: each é counts as its escape \u00e9

CORPUS: dict[str, Any] = {
    # --- the body itself
    "body-list": [HELLO],
    "body-string": "hi",
    "body-null": None,
    "body-int": 5,
    "body-true": True,
    "body-empty-object": {},
    "body-parsed-array": parsed('[{"role": "user", "content": "hi"}]'),
    # --- valid bodies
    "minimal-no-model": {"messages": HELLO},
    "minimal": ok(),
    "every-llm-param": EVERY_LLM_PARAM,
    "every-chat-param": EVERY_CHAT_PARAM,
    "unknown-keys-everywhere": {
        **ok(extra=1, Model="X", **{"": None}),
        "messages": [{"role": "assistant", "content": "x", "tool_calls": [], "extra": 1, "Role": "x"}],
        "tools": [{"type": "function", "function": {"name": "f", "extra": 1, "Parameters": 1}, "extra": 2}],
        "stream_options": {"include_usage": True, "extra": 1},
    },
    "trimmed-strings": {
        "model": "  chat-fast\n",
        "purpose": "  p  ",
        "user": " u ",
        "messages": [
            {
                "role": "assistant",
                "content": "  kept  ",
                "name": " bob ",
                "tool_calls": [{"id": " c1 ", "type": "function", "function": {"name": " f ", "arguments": " {} "}}],
            },
            {"role": "tool", "content": "", "tool_call_id": "\tc1\t"},
        ],
        "tools": [{"type": "function", "function": {"name": " g ", "description": "  d  "}}],
    },
    "name-256-after-trim": msg(role="user", content="x", name=" " + "n" * 256 + " "),
    "purpose-blank-is-empty": ok(purpose="   "),
    "purpose-empty": ok(purpose=""),
    "purpose-null": ok(purpose=None),
    "purpose-200": ok(purpose="p" * 200),
    "model-null": ok(model=None),
    "model-64": ok(model="a" * 64),
    "model-charset": ok(model="0.a_b-c"),
    "content-empty-string": msg(role="user", content=""),
    "content-empty-list": msg(role="user", content=[]),
    "content-part-type-type": msg(role="user", content=[{"type": "type"}]),  # a quirk of _valid_part
    "content-part-custom": msg(role="user", content=[{"type": "file", "file": None}]),
    "content-and-tool-calls": msg(
        role="assistant", content="x", tool_calls=[{"id": "c", "type": "function", "function": NAMED}]
    ),
    "content-missing-with-tool-calls": msg(
        role="assistant", tool_calls=[{"id": "c", "type": "function", "function": NAMED}]
    ),
    "tool-calls-empty-with-content": msg(role="user", content="x", tool_calls=[]),
    "arguments-empty": call(function={"name": "f", "arguments": ""}),
    "arguments-blank-kept": call(function={"name": "f", "arguments": "   "}),
    "bounds-low": ok(temperature=0, max_tokens=1, top_p=0, presence_penalty=-2, frequency_penalty=-2.0, seed=-(10**30)),
    "bounds-high": ok(
        temperature=2, max_tokens=1_000_000, top_p=1.0, presence_penalty=2.0, frequency_penalty=2, seed=10**30
    ),
    "max-completion-tokens-bounds": ok(max_completion_tokens=1_000_000),
    "floats-as-ints": ok(temperature=1, top_p=1, presence_penalty=0),
    "seed-zero": ok(seed=0),
    "seed-huge": ok(seed=10**400),
    "stop-string": ok(stop="END"),
    "stop-empty-string": ok(stop=""),
    "stop-empty-list": ok(stop=[]),
    "stop-four": ok(stop=["a", "b", "c", "d"]),
    "stop-null": ok(stop=None),
    "tool-choice-none": ok(tool_choice="none"),
    "tool-choice-auto": ok(tool_choice="auto"),
    "tool-choice-required": ok(tool_choice="required"),
    "tool-choice-empty-object": ok(tool_choice={}),
    "response-format-empty": ok(response_format={}),
    "tools-empty": ok(tools=[]),
    "tool-full": tool(name="f", description="", parameters={}, strict=False),
    "tool-description-blank-kept": tool(name="f", description="  "),
    "tool-parameters-nested": tool(name="f", parameters={"type": "object", "properties": {"a": {"type": ["x", None]}}}),
    **variants(
        "strict",
        lambda value: tool(name="f", strict=value),
        {
            "null": None,
            "true": True,
            "yes": "yes",
            "NULL": "NULL",
            "blank": "",
            "one": 1,
            "zero-float": 0.0,
            "OFF": "OFF",
            "T": "T",
            "one-float": 1.0,
        },
    ),
    **variants(
        "stream",
        lambda value: ok(stream=value),
        {
            "true": True,
            "TRUE": "TRUE",
            "on": "on",
            "one": "1",
            "int": 1,
            "float": 1.0,
            "f": "f",
            "No": "No",
            "zero": 0,
            "zero-float": 0.0,
            "false": False,
        },
    ),
    "stream-options-empty": ok(stream_options={}),
    "stream-options-lenient": ok(stream_options={"include_usage": "Yes"}),
    "parallel-tool-calls-y": ok(parallel_tool_calls="y"),
    "user-255": ok(user="u" * 255),
    "n-one": ok(n=1),
    "metadata-empty": ok(metadata={}),
    "metadata-at-size-limit": ok(metadata=BIG_METADATA),
    "metadata-escaped-at-limit": ok(metadata=ESCAPED_METADATA),
    "metadata-depth-32": ok(metadata=nested(32)),
    "metadata-list-depth-32": ok(metadata={"a": nested(31, "list")}),
    "messages-2048": ok(messages=HELLO * 2048),
    "tool-calls-128": msg(role="assistant", tool_calls=[{"id": "c", "type": "function", "function": NAMED}] * 128),
    "tools-128": ok(tools=[{"type": "function", "function": {"name": "f"}}] * 128),
    "parsed-exact-numbers": parsed(
        '{"model": "m", "messages": [{"role": "user", "content": "x"}], "temperature": 0.50, "top_p": 1E0,'
        ' "stream": 1.0, "stream_options": {"include_usage": 0.0}, "max_tokens": 16}',
        exact_numbers=True,
    ),
    "parsed-plain-numbers": parsed('{"model": "m", "messages": [{"role": "user", "content": "x"}], "top_p": 1e-3}'),
    # --- the body's shape
    "messages-missing": {"model": "chat-fast"},
    "messages-null": ok(messages=None),
    "messages-empty": ok(messages=[]),
    "messages-string": ok(messages="hi"),
    "messages-object": ok(messages={"role": "user", "content": "hi"}),
    "messages-int": ok(messages=5),
    "messages-items": ok(messages=[None, 5, "hi", [], True, 1.5, {}]),
    "messages-2049": ok(messages=HELLO * 2049),
    "messages-2049-all-invalid": ok(messages=[None] * 2049),
    # --- roles
    "role-missing": msg(content="hi"),
    "role-null": msg(role=None, content="hi"),
    "role-empty": msg(role="", content="hi"),
    "role-unknown": msg(role="robot", content="hi"),
    "role-case": msg(role="User", content="hi"),
    "role-padded": msg(role=" user ", content="hi"),
    "role-int": msg(role=5, content="hi"),
    "role-true": msg(role=True, content="hi"),
    "role-list": msg(role=["user"], content="hi"),
    "role-object": msg(role={"a": 1}, content="hi"),
    "role-float": msg(role=1.5, content="hi"),
    "role-exact-number": parsed('{"model": "m", "messages": [{"role": 1.50, "content": "x"}]}', exact_numbers=True),
    "role-surrogate": msg(role="\ud800", content="hi"),
    "role-invalid-content-missing": msg(role="robot"),
    # --- content
    "content-missing": msg(role="user"),
    "content-null": msg(role="user", content=None),
    "content-null-empty-tool-calls": msg(role="assistant", content=None, tool_calls=[]),
    "content-missing-empty-tool-calls": msg(role="assistant", tool_calls=[]),
    "content-int": msg(role="user", content=5),
    "content-true": msg(role="user", content=True),
    "content-object": msg(role="user", content={"type": "text", "text": "x"}),
    "content-list-of-strings": msg(role="user", content=["hi"]),
    "content-part-no-text": msg(role="user", content=[{"type": "text"}]),
    "content-part-text-int": msg(role="user", content=[{"type": "text", "text": 5}]),
    "content-part-text-null": msg(role="user", content=[{"type": "text", "text": None}]),
    "content-part-no-payload": msg(role="user", content=[{"type": "image_url"}]),
    "content-part-no-type": msg(role="user", content=[{"text": "x"}]),
    "content-part-int-type": msg(role="user", content=[{"type": 5, "5": 1}]),
    "content-part-null": msg(role="user", content=[None]),
    "content-one-bad-part": msg(role="user", content=[{"type": "text", "text": "ok"}, {"type": "x"}]),
    "content-invalid-and-name-invalid": msg(role="user", content=5, name=5),
    # --- name and tool_call_id
    "name-empty": msg(role="user", content="x", name=""),
    "name-blank": msg(role="user", content="x", name=" \n "),
    "name-null": msg(role="user", content="x", name=None),
    "name-int": msg(role="user", content="x", name=5),
    "name-float": msg(role="user", content="x", name=1.5),
    "name-list": msg(role="user", content="x", name=["a"]),
    "name-257": msg(role="user", content="x", name="n" * 257),
    "name-nul": msg(role="user", content="x", name="a\x00b"),
    "name-surrogate": msg(role="user", content="x", name="a\udc80b"),
    "name-257-nul-surrogate": msg(role="user", content="x", name="\ud83d" + "n" * 256 + "\x00"),
    "tool-call-id-int": msg(role="tool", content="x", tool_call_id=5),
    "tool-call-id-empty": msg(role="tool", content="x", tool_call_id=""),
    "tool-call-id-257": msg(role="tool", content="x", tool_call_id="i" * 257),
    # --- tool_calls
    "tool-calls-string": msg(role="assistant", content=None, tool_calls="x"),
    "tool-calls-object": msg(role="assistant", content=None, tool_calls={}),
    "tool-calls-null": msg(role="assistant", content=None, tool_calls=None),
    "tool-calls-items": msg(role="assistant", content="x", tool_calls=[None, 5, "c", []]),
    "tool-call-empty": msg(role="assistant", content=None, tool_calls=[{}]),
    "tool-call-fuzzed": msg(role="assistant", content=None, tool_calls=[{"": {"x": None}}]),
    "tool-call-id-missing": call(id=None),
    "tool-call-id-blank": call(id=" "),
    "tool-call-type-web": call(type="web"),
    "tool-call-type-null": call(type=None),
    "tool-call-type-int": call(type=1),
    "tool-call-function-string": call(function="f"),
    "tool-call-function-null": call(function=None),
    "tool-call-function-empty": call(function={}),
    "tool-call-arguments-object": call(function={"name": "f", "arguments": {}}),
    "tool-call-arguments-null": call(function={"name": "f", "arguments": None}),
    "tool-call-arguments-int": call(function={"name": "f", "arguments": 1}),
    "tool-call-name-257": call(function={"name": "f" * 257, "arguments": "{}"}),
    "tool-call-everything-wrong": call(id=5, type="x", function={"name": "", "arguments": []}),
    "tool-calls-129": msg(role="assistant", tool_calls=[{"id": "c", "type": "function", "function": NAMED}] * 129),
    "errors-in-several-messages": ok(
        messages=[
            {"role": "user", "content": "ok"},
            {"role": "assistant", "tool_calls": [{"id": "c"}, {"id": "d", "type": "function", "function": NAMED}]},
            {"role": "user"},
            {"role": "x", "content": "x", "tool_call_id": 1},
        ]
    ),
    # --- model
    "model-missing": {"messages": HELLO, "temperature": 1},
    "model-int": ok(model=5),
    "model-true": ok(model=True),
    "model-list": ok(model=["chat-fast"]),
    "model-empty": ok(model=""),
    "model-blank": ok(model="  "),
    "model-uppercase": ok(model="Chat-Fast"),
    "model-leading-dash": ok(model="-chat"),
    "model-space": ok(model="chat fast"),
    "model-65": ok(model="a" * 65),
    "model-nul": ok(model="a\x00"),
    "model-non-ascii": ok(model="modèle"),
    "model-inner-newline": ok(model="a\nb"),
    # --- purpose and user
    "purpose-int": ok(purpose=5),
    "purpose-201": ok(purpose="p" * 201),
    "purpose-201-trimmed-to-200": ok(purpose=" " + "p" * 200 + " "),
    "purpose-list": ok(purpose=[]),
    "purpose-true": ok(purpose=True),
    "user-int": ok(user=5),
    "user-empty": ok(user=""),
    "user-null": ok(user=None),
    "user-256": ok(user="u" * 256),
    # --- numbers
    **variants(
        "temperature",
        lambda value: ok(temperature=value),
        {
            "string": "0.5",
            "word": "hot",
            "true": True,
            "false": False,
            "null": None,
            "list": [],
            "object": {},
            "just-over": 2.0000001,
            "three": 3,
            "negative": -0.1,
            "huge-int": 10**400,
            "huge-float": 1e308,
            "nan-string": "NaN",
            "inf-string": "Infinity",
            "nan": float("nan"),
            "inf": float("inf"),
            "minus-inf": float("-inf"),
        },
    ),
    "temperature-parsed-nan": parsed('{"messages": [{"role": "user", "content": "x"}], "temperature": NaN}'),
    "top-p-over": ok(top_p=1.01),
    "top-p-under": ok(top_p=-0.01),
    "presence-penalty-over": ok(presence_penalty=2.5),
    "presence-penalty-under": ok(presence_penalty=-2.5),
    "frequency-penalty-under": ok(frequency_penalty=-3),
    "frequency-penalty-string": ok(frequency_penalty="0"),
    **variants(
        "max-tokens",
        lambda value: ok(max_tokens=value),
        {
            "string": "5",
            "float": 5.0,
            "fraction": 1.5,
            "true": True,
            "zero": 0,
            "over": 1_000_001,
            "negative": -1,
            "null": None,
            "huge": 10**400,
            "list": [5],
        },
    ),
    "max-tokens-exact-number": parsed(
        '{"messages": [{"role": "user", "content": "x"}], "max_tokens": 5.0}', exact_numbers=True
    ),
    "max-completion-tokens-zero": ok(max_completion_tokens=0),
    "max-completion-tokens-string": ok(max_completion_tokens="1"),
    "seed-string": ok(seed="5"),
    "seed-float": ok(seed=1.0),
    "seed-false": ok(seed=False),
    "seed-null": ok(seed=None),
    **variants(
        "n",
        lambda value: ok(n=value),
        {
            "two": 2,
            "zero": 0,
            "string": "1",
            "float": 1.0,
            "true": True,
            "null": None,
        },
    ),
    # --- stop, tool_choice, response_format
    "stop-five": ok(stop=["a", "b", "c", "d", "e"]),
    "stop-int": ok(stop=5),
    "stop-list-of-int": ok(stop=[1]),
    "stop-list-with-null": ok(stop=["a", None]),
    "stop-object": ok(stop={}),
    "stop-true": ok(stop=True),
    **variants(
        "tool-choice",
        lambda value: ok(tool_choice=value),
        {
            "unknown": "sometimes",
            "empty": "",
            "null": None,
            "int": 5,
            "list": [],
            "true": True,
            "upper": "AUTO",
            "padded": " auto ",
        },
    ),
    "response-format-string": ok(response_format="json"),
    "response-format-list": ok(response_format=[]),
    "response-format-null": ok(response_format=None),
    "response-format-int": ok(response_format=1),
    # --- tools
    "tools-string": ok(tools="all"),
    "tools-object": ok(tools={}),
    "tools-null": ok(tools=None),
    "tools-items": ok(tools=[None, 5, "f", []]),
    "tool-empty": ok(tools=[{}]),
    "tool-type-web": ok(tools=[{"type": "web", "function": {"name": "f"}}]),
    "tool-function-missing": ok(tools=[{"type": "function"}]),
    "tool-function-string": ok(tools=[{"type": "function", "function": "f"}]),
    "tool-name-missing": tool(description="no name"),
    "tool-name-65": tool(name="f" * 65),
    "tool-name-int": tool(name=5),
    "tool-name-null": tool(name=None),
    "tool-description-int": tool(name="f", description=5),
    "tool-description-null": tool(name="f", description=None),
    "tool-parameters-string": tool(name="f", parameters="x"),
    "tool-parameters-list": tool(name="f", parameters=[]),
    "tool-parameters-null": tool(name="f", parameters=None),
    "tool-strict-two": tool(name="f", strict=2),
    "tool-strict-maybe": tool(name="f", strict="maybe"),
    "tool-strict-list": tool(name="f", strict=[]),
    "tool-everything-wrong": tool(name="", description=[], parameters=1, strict="x"),
    "tools-129": ok(tools=[{"type": "function", "function": {"name": "f"}}] * 129),
    # --- stream, stream_options, parallel_tool_calls
    **variants(
        "stream",
        lambda value: ok(stream=value),
        {
            "null": None,
            "maybe": "maybe",
            "two": 2,
            "list": [],
            "object": {},
            "empty": "",
            "null-string": "null",
            "half": 0.5,
        },
    ),
    "stream-options-null": ok(stream_options=None),
    "stream-options-list": ok(stream_options=[]),
    "stream-options-string": ok(stream_options="x"),
    "stream-options-bad-flag": ok(stream_options={"include_usage": "maybe"}),
    "stream-options-null-flag": ok(stream_options={"include_usage": None}),
    "parallel-tool-calls-string": ok(parallel_tool_calls="x"),
    "parallel-tool-calls-null": ok(parallel_tool_calls=None),
    # --- metadata
    **variants(
        "metadata",
        lambda value: ok(metadata=value),
        {
            "list": ["not", "an", "object"],
            "string": "x",
            "int": 5,
            "null": None,
            "true": True,
            "over-size-limit": {"k": "x" * (16 * 1024 - 7)},
            "escaped-over-limit": {"k": "é" * 2730},
            "too-deep": nested(33),
            "list-too-deep": nested(33, "list"),
            "nested-list-too-deep": {"a": nested(32, "list")},
            "nan": {"x": float("nan")},
            "blob": {"blob": "x" * (16 * 1024)},
        },
    ),
    # --- many errors at once: their order
    "invalid-everywhere": INVALID_EVERYWHERE,
    "invalid-everywhere-parsed": parsed(json.dumps(INVALID_EVERYWHERE)),
}

VALIDATORS: dict[str, Callable[[Any], dict[str, Any]]] = {
    "llm_call": llm_schema.validate_llm_call,
    "chat_completion": llm_schema.validate_chat_completion,
}


def outcome(validate: Callable[[Any], dict[str, Any]], body: Any) -> dict[str, Any]:
    """What the golden file holds for one validator and body: {"ok": data} or {"errors": [...]}."""
    try:
        data = validate(body)
    except RequestValidationError as exc:
        assert exc.status_code == 422
        assert exc.payload() == {"detail": exc.errors}
        return {"errors": exc.errors}
    text = json.dumps(data)
    if len(text) > DIGEST_OVER:
        return {"ok_sha256": hashlib.sha256(text.encode()).hexdigest()}
    return {"ok": data}


def same_types(a: Any, b: Any) -> bool:
    """Equal and of the same types all the way down (1 is not 1.0 nor True), keys in the same order."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(same_types(a[key], b[key]) for key in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same_types(x, y) for x, y in zip(a, b, strict=True))
    return a == b


@pytest.fixture(scope="module")
def golden() -> dict[str, Any]:
    return json.loads(GOLDEN_PATH.read_text())


def test_the_golden_file_covers_the_corpus_exactly(golden):
    assert sorted(golden) == sorted(CORPUS)


@pytest.mark.parametrize("case", list(CORPUS))
@pytest.mark.parametrize("route", list(VALIDATORS))
def test_same_answer_as_the_drf_serializers(golden, route, case):
    expected = golden[case][route]
    actual = outcome(VALIDATORS[route], CORPUS[case])
    assert actual == expected
    assert same_types(actual, expected)


def test_the_input_is_left_untouched():
    body = json.loads(json.dumps(EVERY_CHAT_PARAM))
    before = json.dumps(body)
    llm_schema.validate_chat_completion(body)
    llm_schema.validate_llm_call(body)
    assert json.dumps(body) == before


# --- the documentation models -------------------------------------------------------------------


def openapi_schema(model: type) -> dict[str, Any]:
    """What drf-spectacular's pydantic contrib registers for `model` (same call, same template)."""
    return model_json_schema(model, ref_template="#/components/schemas/{model}", mode="serialization")


def walk(schema: Any):
    yield schema
    if isinstance(schema, dict):
        for value in schema.values():
            yield from walk(value)
    elif isinstance(schema, list):
        for value in schema:
            yield from walk(value)


@pytest.mark.parametrize("model", [llm_schema.LLMCallIn, llm_schema.ChatCompletionIn])
def test_the_models_are_openapi_3_0_components(model):
    schema = openapi_schema(model)
    nodes = [node for node in walk(schema) if isinstance(node, dict)]
    assert not [node for node in nodes if "title" in node or "anyOf" in node or node.get("type") == "null"]
    assert set(schema["$defs"]) == {
        "MessageInRequest",
        "ToolCallInRequest",
        "FunctionCallInRequest",
        "ToolInRequest",
        "FunctionDefInRequest",
        *(["StreamOptionsInRequest"] if model is llm_schema.ChatCompletionIn else []),
    }


def test_the_models_document_every_field_bound_and_null():
    llm = openapi_schema(llm_schema.LLMCallIn)
    chat = openapi_schema(llm_schema.ChatCompletionIn)
    message = llm["$defs"]["MessageInRequest"]
    assert list(llm["properties"]) == [
        *("messages", "model", "purpose", "temperature", "max_tokens", "top_p", "stop", "presence_penalty"),
        *("frequency_penalty", "seed", "response_format", "tools", "tool_choice", "metadata"),
    ]
    assert list(chat["properties"]) == [
        *("model", "messages", "stream", "stream_options", "temperature", "max_tokens", "max_completion_tokens"),
        *("top_p", "stop", "presence_penalty", "frequency_penalty", "seed", "response_format", "tools"),
        *("tool_choice", "parallel_tool_calls", "user", "n"),
    ]
    assert llm["required"] == ["messages"]
    assert chat["required"] == ["messages", "model"]
    assert message["required"] == ["role"]
    assert llm["properties"]["messages"] == {
        "items": {"$ref": "#/components/schemas/MessageInRequest"},
        "minItems": 1,
        "maxItems": 2048,
        "type": "array",
    }
    assert llm["properties"]["model"] == {
        "type": "string",
        "nullable": True,
        "minLength": 1,
        "maxLength": 64,
        "pattern": "^[a-z0-9][a-z0-9_.-]{0,63}$",
    }
    assert "nullable" not in chat["properties"]["model"]
    assert llm["properties"]["temperature"] == {"type": "number", "format": "double", "minimum": 0, "maximum": 2}
    assert chat["properties"]["n"] == {"type": "integer", "minimum": 1, "maximum": 1}
    assert chat["properties"]["stream"] == {"type": "boolean", "default": False}
    assert chat["properties"]["stop"]["nullable"] is True and "nullable" not in llm["properties"]["stop"]
    assert message["properties"]["role"]["enum"] == ["system", "developer", "user", "assistant", "tool"]
    assert message["properties"]["content"]["nullable"] is True
    assert llm["$defs"]["FunctionDefInRequest"]["properties"]["strict"] == {"type": "boolean", "nullable": True}
    assert not [prop for prop in walk(llm) if isinstance(prop, dict) and prop.get("default", 0) is None]


# --- how the golden file was made -----------------------------------------------------------------
