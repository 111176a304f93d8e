"""A deterministic, OpenAI-compatible mock LLM upstream (raw ASGI, no framework, no network).

Used by the tests, the demo and the benchmarks (where it is the 0-latency baseline), so the hot
path is kept cheap: one ``json.loads`` per request, string-templated stream chunks, no framework.

Endpoints
    POST /v1/chat/completions   (also /chat/completions) non-stream and ``stream: true`` (SSE)
    GET  /v1/models             (also /models) OpenAI list shape
    GET  /health                {"status": "ok"} — readiness probe
    GET  /_stats[?last=N]       counters and the last 10 000 served requests
    GET  /_control              current knobs and pending ``fail_next``
    POST /_control              change knobs at runtime, ``fail_next``/``fault``, ``reset``

Token accounting (identical for stream and non-stream)
    prompt_tokens     = max(1, sum over messages of len(text.split()) + 3); ``text`` is the string
                        content, or the joined ``text`` parts of a list content, or "" for None.
    completion_tokens = number of content tokens produced: ``chunks`` (default 20) words
                        "tok0 ", "tok1 ", …, truncated to ``max_tokens``/``max_completion_tokens``;
                        ``finish_reason`` is "length" when that truncation happened, else "stop".
                        A tool call counts as 1 completion token.

Fault selection for one chat request, first match wins:
    1. the model name contains a component ``fail-500``, ``fail-429``, ``hang``, ``malformed`` or
       ``cut`` (delimited by start/end or a non-alphanumeric character: ``mock-cut`` matches,
       ``execute`` does not);
    2. a ``[[mock:fault=500|429|hang|malformed|cut]]`` directive in the last user message;
    3. a pending ``fail_next`` set through ``POST /_control`` (consumed by every valid chat request,
       whichever fault it ends up with);
    4. the rates (``rate_500``, ``rate_429``, ``rate_hang``, ``rate_malformed``, ``rate_cut``): one
       draw of a seeded ``random.Random`` per request whenever any rate is > 0.

Other per-request knobs: model component ``slow-<ms>`` *adds* latency; directives (last user message)
``[[mock:latency=MS]]`` (replaces the global latency), ``[[mock:chunks=N]]``,
``[[mock:chunk_delay=MS]]``, ``[[mock:tool=NAME]]`` (a tool call to NAME with arguments "{}" and
finish_reason "tool_calls" — only when the request has ``tools``). An unknown directive is a 400.

Faults: 500 → OpenAI error JSON; 429 → error JSON + ``Retry-After: 1``; hang → no answer until the
client goes away (at most 3600 s); malformed → 200 with an invalid JSON body (for a stream: one
unparsable SSE event, then [DONE]); cut → non-stream: half the body then the connection is closed;
stream: the role chunk and half the tokens, then the connection is closed (no finish chunk, no [DONE]).

Run it with ``manage.py mock_llm_server --port 8100`` or ``python -m jobs.mock_upstream --port 8100``;
``uvicorn jobs.mock_upstream:app`` also works and reads ``MOCK_UPSTREAM_<KNOB>`` env variables
(e.g. ``MOCK_UPSTREAM_LATENCY_MS=50``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import random
import re
import time
from collections import deque
from dataclasses import asdict, dataclass, fields
from functools import lru_cache
from typing import Any
from urllib.parse import parse_qs

FAULTS = ("500", "429", "hang", "malformed", "cut")
SERVED_MAX = 10_000
HANG_SECONDS = 3600.0
MODEL_IDS = ("mock-model", "mock-fail-500", "mock-fail-429", "mock-hang", "mock-malformed", "mock-cut", "mock-slow-200")


@dataclass
class MockConfig:
    latency_ms: float = 0.0  # before the first byte of every chat response
    chunk_delay_ms: float = 0.0  # between two consecutive content chunks of a stream
    chunks: int = 20  # completion tokens per answer
    rate_500: float = 0.0
    rate_429: float = 0.0
    rate_hang: float = 0.0
    rate_malformed: float = 0.0
    rate_cut: float = 0.0
    seed: int = 0

    @classmethod
    def from_env(cls, prefix: str = "MOCK_UPSTREAM_") -> MockConfig:
        cfg = cls()
        for f in fields(cls):
            raw = os.environ.get(prefix + f.name.upper())
            if raw not in (None, ""):
                setattr(cfg, f.name, _coerce(f.name, raw))
        return cfg


KNOBS = tuple(f.name for f in fields(MockConfig))
_INT_KNOBS = {"chunks", "seed"}


def _coerce(name: str, value: Any) -> int | float:
    if isinstance(value, bool):
        raise ValueError(f"{name} must be a number")
    number = int(value) if name in _INT_KNOBS else float(value)
    if name != "seed" and number < 0:
        raise ValueError(f"{name} must be >= 0")
    if name.startswith("rate_") and number > 1:
        raise ValueError(f"{name} must be between 0 and 1")
    return number


# --------------------------------------------------------------------------- request parsing helpers

_MODEL_FAULT_RE = re.compile(r"(?<![a-z0-9])(fail-500|fail-429|hang|malformed|cut)(?![a-z0-9])")
_MODEL_SLOW_RE = re.compile(r"(?<![a-z0-9])slow-(\d+)(?![a-z0-9])")
_DIRECTIVE_RE = re.compile(r"\[\[mock:([a-z_]+)=([^\]]*)\]\]", re.IGNORECASE)


@lru_cache(maxsize=4096)
def parse_model(model: str) -> tuple[str | None, float]:
    """(fault forced by the model name or None, extra latency in ms)."""
    low = model.lower()
    fault = None
    m = _MODEL_FAULT_RE.search(low)
    if m:
        fault = m.group(1).removeprefix("fail-")
    slow = _MODEL_SLOW_RE.search(low)
    return fault, float(slow.group(1)) if slow else 0.0


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(p.get("text") or "" for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return ""


def count_prompt_tokens(messages: list) -> int:
    total = 0
    for message in messages:
        content = message.get("content") if isinstance(message, dict) else None
        total += len(_text(content).split()) + 3
    return max(1, total)


def parse_directives(messages: list) -> dict[str, Any]:
    """Directives found in the last user message; raises ValueError on an unknown/invalid one."""
    text = ""
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            text = _text(message.get("content"))
            break
    if "[[mock:" not in text.lower():
        return {}
    out: dict[str, Any] = {}
    for key, value in _DIRECTIVE_RE.findall(text):
        key, value = key.lower(), value.strip()
        try:
            if key == "fault":
                value = value.lower()
                if value not in FAULTS:
                    raise ValueError
                out["fault"] = value
            elif key in ("latency", "chunk_delay"):
                out[key] = float(value)
                if out[key] < 0:
                    raise ValueError
            elif key == "chunks":
                out["chunks"] = int(value)
                if out["chunks"] < 0:
                    raise ValueError
            elif key == "tool":
                if not value:
                    raise ValueError
                out["tool"] = value
            else:
                raise ValueError
        except ValueError:
            raise ValueError(f"invalid mock directive [[mock:{key}={value}]]") from None
    return out


_TOKEN_CACHE = [f"tok{i} " for i in range(256)]


def token(i: int) -> str:
    return _TOKEN_CACHE[i] if i < 256 else f"tok{i} "


@lru_cache(maxsize=1024)
def completion_text(n: int) -> str:
    """The whole answer of n tokens: exactly the concatenation of the stream deltas."""
    return "".join([token(i) for i in range(n)])


# --------------------------------------------------------------------------- ASGI plumbing

_JSON_HEADERS = [(b"content-type", b"application/json")]
_SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]
_DONE = b"data: [DONE]\n\n"


def _error_body(message: str, type_: str, code: str | None) -> dict:
    return {"error": {"message": message, "type": type_, "param": None, "code": code}}


async def _send_json(send, status: int, payload: Any, extra_headers: list | None = None) -> None:
    body = json.dumps(payload, separators=(",", ":")).encode()
    headers = _JSON_HEADERS + [(b"content-length", str(len(body)).encode())]
    if extra_headers:
        headers += extra_headers
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


_FAULT_ERRORS = {
    "500": (500, _error_body("The mock upstream injected a server error.", "server_error", "mock_fault_500"), None),
    "429": (
        429,
        _error_body("Rate limit reached (mock upstream injected 429).", "rate_limit_error", "rate_limit_exceeded"),
        [(b"retry-after", b"1")],
    ),
}


async def _send_fault_error(send, entry: dict, fault: str) -> None:
    status, payload, headers = _FAULT_ERRORS[fault]
    entry["status"] = status
    await _send_json(send, status, payload, headers)
    entry["completed"] = True


async def _read_body(receive) -> bytes:
    message = await receive()
    body = message.get("body", b"")
    if not message.get("more_body"):
        return body
    parts = [body]
    while message.get("more_body"):
        message = await receive()
        parts.append(message.get("body", b""))
    return b"".join(parts)


async def _wait_disconnect(receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


class _QuietAbortFilter(logging.Filter):
    """Hide uvicorn's complaint about the responses this mock aborts on purpose (cut/hang)."""

    MESSAGES = frozenset(
        {"ASGI callable returned without completing response.", "ASGI callable returned without starting response."}
    )

    def filter(self, record: logging.LogRecord) -> bool:
        return record.msg not in self.MESSAGES


_QUIET_FILTER = _QuietAbortFilter()


def install_log_filter() -> None:
    logging.getLogger("uvicorn.error").addFilter(_QUIET_FILTER)


install_log_filter()


# --------------------------------------------------------------------------- the application


class MockUpstream:
    """The ASGI app. One instance holds the knobs, the fault queue, the RNG and the stats."""

    def __init__(self, config: MockConfig | None = None) -> None:
        self.base = config or MockConfig()
        self.reset()

    # -- state
    def reset(self) -> None:
        """Back to the startup knobs; clear fail_next, counters and the served log; reseed."""
        self.cfg = MockConfig(**asdict(self.base))
        self.rng = random.Random(self.cfg.seed)
        self.fail_next = 0
        self.fail_next_fault = "500"
        self.requests = 0
        self.rejected = 0
        self.active = 0
        self.by_model: dict[str, int] = {}
        self.by_fault: dict[str, int] = {}
        self.served: deque[dict] = deque(maxlen=SERVED_MAX)
        self._refresh_rates()

    def _refresh_rates(self) -> None:
        c = self.cfg
        self._rate_total = c.rate_500 + c.rate_429 + c.rate_hang + c.rate_malformed + c.rate_cut
        acc, table = 0.0, []
        for fault, rate in zip(
            FAULTS, (c.rate_500, c.rate_429, c.rate_hang, c.rate_malformed, c.rate_cut), strict=True
        ):
            acc += rate
            table.append((acc, fault))
        self._rate_table = table

    def control_state(self) -> dict:
        return {"config": asdict(self.cfg), "fail_next": self.fail_next, "fault": self.fail_next_fault}

    def apply_control(self, data: dict) -> None:
        """Validate everything first, then apply: reset, then knobs, then fail_next/fault."""
        allowed = set(KNOBS) | {"reset", "fail_next", "fault"}
        unknown = sorted(set(data) - allowed)
        if unknown:
            raise ValueError(f"unknown control field(s): {', '.join(unknown)}")
        knobs = {k: _coerce(k, data[k]) for k in KNOBS if k in data}
        fault = data.get("fault")
        if fault is not None:
            fault = str(fault).lower().removeprefix("fail-")
            if fault not in FAULTS:
                raise ValueError(f"fault must be one of {', '.join(FAULTS)}")
        fail_next = data.get("fail_next")
        if fail_next is not None and (isinstance(fail_next, bool) or not isinstance(fail_next, int) or fail_next < 0):
            raise ValueError("fail_next must be an integer >= 0")
        if data.get("reset"):
            self.reset()
        for key, value in knobs.items():
            setattr(self.cfg, key, value)
        if "seed" in knobs:
            self.rng = random.Random(self.cfg.seed)
        self._refresh_rates()
        if fail_next is not None:
            self.fail_next = fail_next
        if fault is not None:
            self.fail_next_fault = fault

    def stats(self, last: int | None = None) -> dict:
        served = list(self.served)
        if last is not None:
            served = served[-last:] if last > 0 else []
        return {
            "requests": self.requests,
            "rejected": self.rejected,
            "active": self.active,
            "by_model": dict(self.by_model),
            "by_fault": dict(self.by_fault),
            "served": served,
        }

    # -- ASGI entry point
    async def __call__(self, scope, receive, send) -> None:
        kind = scope["type"]
        if kind == "http":
            path = scope["path"]
            method = scope["method"]
            if path == "/v1/chat/completions" or path == "/chat/completions":
                if method == "POST":
                    return await self.chat(scope, receive, send)
                return await self._method_not_allowed(send)
            if path == "/v1/models" or path == "/models":
                if method == "GET":
                    data = [{"id": m, "object": "model", "created": 1700000000, "owned_by": "mock"} for m in MODEL_IDS]
                    return await _send_json(send, 200, {"object": "list", "data": data})
                return await self._method_not_allowed(send)
            if path == "/health":
                return await _send_json(send, 200, {"status": "ok"})
            if path == "/_stats":
                last = parse_qs(scope.get("query_string", b"").decode()).get("last")
                try:
                    n = int(last[0]) if last else None
                except ValueError:
                    n = None
                return await _send_json(send, 200, self.stats(n))
            if path == "/_control":
                return await self.control(method, receive, send)
            return await _send_json(
                send, 404, _error_body(f"Unknown path: {method} {path}", "invalid_request_error", "not_found")
            )
        if kind == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        return None

    async def _method_not_allowed(self, send) -> None:
        await _send_json(send, 405, _error_body("Method not allowed", "invalid_request_error", "method_not_allowed"))

    async def control(self, method: str, receive, send) -> None:
        if method == "GET":
            return await _send_json(send, 200, self.control_state())
        if method != "POST":
            return await self._method_not_allowed(send)
        body = await _read_body(receive)
        try:
            data = json.loads(body or b"{}")
            if not isinstance(data, dict):
                raise ValueError("control body must be a JSON object")
            self.apply_control(data)
        except ValueError as exc:  # JSONDecodeError is a ValueError
            return await _send_json(send, 400, _error_body(str(exc), "invalid_request_error", "invalid_control"))
        return await _send_json(send, 200, {"ok": True, **self.control_state()})

    # -- chat completions
    async def chat(self, scope, receive, send) -> None:
        self.requests += 1
        index = self.requests
        body = await _read_body(receive)
        try:
            req = json.loads(body)
        except ValueError:
            self.rejected += 1
            return await _send_json(
                send, 400, _error_body("Request body is not valid JSON.", "invalid_request_error", "invalid_json")
            )
        messages = req.get("messages") if isinstance(req, dict) else None
        if not isinstance(messages, list) or not messages:
            self.rejected += 1
            return await _send_json(
                send,
                400,
                _error_body(
                    "'messages' is required and must be a non-empty array.", "invalid_request_error", "missing_messages"
                ),
            )
        try:
            directives = parse_directives(messages)
        except ValueError as exc:
            self.rejected += 1
            return await _send_json(send, 400, _error_body(str(exc), "invalid_request_error", "invalid_mock_directive"))

        model = req.get("model")
        if not isinstance(model, str) or not model:
            model = "mock-model"
        stream = req.get("stream") is True
        cfg = self.cfg
        model_fault, slow_ms = parse_model(model)

        # fault selection (see module docstring for the order)
        fault = model_fault or directives.get("fault")
        if self.fail_next > 0:
            self.fail_next -= 1
            fault = fault or self.fail_next_fault
        if self._rate_total > 0:
            draw = self.rng.random()
            if fault is None:
                for threshold, name in self._rate_table:
                    if draw < threshold:
                        fault = name
                        break

        latency_ms = directives.get("latency", cfg.latency_ms) + slow_ms
        chunk_delay = directives.get("chunk_delay", cfg.chunk_delay_ms) / 1000.0
        n_tokens = directives.get("chunks", cfg.chunks)
        finish = "stop"
        max_tokens = req.get("max_completion_tokens") or req.get("max_tokens")
        if isinstance(max_tokens, int) and not isinstance(max_tokens, bool) and 0 < max_tokens < n_tokens:
            n_tokens, finish = max_tokens, "length"
        tool = directives.get("tool") if req.get("tools") else None
        if tool:
            n_tokens, finish = 1, "tool_calls"
        prompt_tokens = count_prompt_tokens(messages)
        stream_options = req.get("stream_options")
        include_usage = isinstance(stream_options, dict) and stream_options.get("include_usage") is True

        self.by_model[model] = self.by_model.get(model, 0) + 1
        if fault:
            self.by_fault[fault] = self.by_fault.get(fault, 0) + 1
        entry = {
            "request_index": index,
            "model": model,
            "stream": stream,
            "prompt_tokens": prompt_tokens,
            "completion_tokens": 0,
            "fault": fault,
            "completed": False,
            "disconnected": False,
            "status": None,
            "t": time.time(),
        }
        self.served.append(entry)
        self.active += 1
        try:
            if fault == "hang":
                return await self._hang(receive, entry)
            if stream:
                return await self._stream(
                    receive, send, entry, index, model, fault, latency_ms, chunk_delay, n_tokens, finish, tool,
                    prompt_tokens, include_usage,
                )  # fmt: skip
            if latency_ms > 0:
                await asyncio.sleep(latency_ms / 1000.0)
            if fault == "500" or fault == "429":
                return await _send_fault_error(send, entry, fault)
            await self._non_stream(send, entry, index, model, fault, n_tokens, finish, tool, prompt_tokens)
            if fault != "cut":
                entry["completed"] = True
        finally:
            self.active -= 1
        return None

    async def _hang(self, receive, entry: dict) -> None:
        """Never answer: wait until the client goes away (or 3600 s, or server shutdown)."""
        try:
            await asyncio.wait_for(_wait_disconnect(receive), HANG_SECONDS)
        except (TimeoutError, asyncio.CancelledError):
            pass
        entry["disconnected"] = True

    async def _non_stream(self, send, entry, index, model, fault, n_tokens, finish, tool, prompt_tokens) -> None:
        if tool:
            message = {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": f"call_mock_{index}", "type": "function", "function": {"name": tool, "arguments": "{}"}}
                ],
            }
        else:
            message = {"role": "assistant", "content": completion_text(n_tokens)}
        payload = {
            "id": f"chatcmpl-mock-{index}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "system_fingerprint": "fp_mock",
            "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": n_tokens,
                "total_tokens": prompt_tokens + n_tokens,
            },
        }
        body = json.dumps(payload, separators=(",", ":")).encode()
        if fault == "malformed":
            body = body[: len(body) // 2]  # a complete HTTP response whose body is truncated, invalid JSON
        headers = _JSON_HEADERS + [(b"content-length", str(len(body)).encode())]
        entry["status"] = 200
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        if fault == "cut":
            # Half the announced body, then return: uvicorn closes the connection.
            await send({"type": "http.response.body", "body": body[: len(body) // 2], "more_body": True})
            return
        await send({"type": "http.response.body", "body": body})
        entry["completion_tokens"] = n_tokens

    async def _stream(
        self, receive, send, entry, index, model, fault, latency_ms, chunk_delay, n_tokens, finish, tool,
        prompt_tokens, include_usage,
    ) -> None:  # fmt: skip
        disconnect = asyncio.ensure_future(_wait_disconnect(receive))
        try:
            if latency_ms > 0:
                await asyncio.wait((disconnect,), timeout=latency_ms / 1000.0)
                if disconnect.done():
                    entry["disconnected"] = True
                    return
            if fault == "500" or fault == "429":
                await _send_fault_error(send, entry, fault)
                return

            prefix = (
                'data: {"id":"chatcmpl-mock-' + str(index) + '","object":"chat.completion.chunk","created":'
                + str(int(time.time())) + ',"model":' + json.dumps(model) + ',"system_fingerprint":"fp_mock","choices":'
            )  # fmt: skip
            head = prefix + '[{"index":0,"delta":'
            entry["status"] = 200
            await send({"type": "http.response.start", "status": 200, "headers": _SSE_HEADERS})
            await send(
                {
                    "type": "http.response.body",
                    "body": (head + '{"role":"assistant"},"logprobs":null,"finish_reason":null}]}\n\n').encode(),
                    "more_body": True,
                }
            )
            if fault == "malformed":
                await send(
                    {"type": "http.response.body", "body": (head + '{"content":"tok0 \n\n').encode(), "more_body": True}
                )
                await send({"type": "http.response.body", "body": _DONE})
                entry["completed"] = True
                return

            if tool:
                call = json.dumps(
                    [
                        {
                            "index": 0,
                            "id": f"call_mock_{index}",
                            "type": "function",
                            "function": {"name": tool, "arguments": "{}"},
                        }
                    ]
                )
                pieces = [head + '{"tool_calls":' + call + '},"logprobs":null,"finish_reason":null}]}\n\n']
            else:
                pieces = None
            limit = n_tokens // 2 if fault == "cut" else n_tokens
            sent = 0
            for i in range(limit):
                if i and chunk_delay > 0:
                    await asyncio.wait((disconnect,), timeout=chunk_delay)
                if disconnect.done():
                    entry["disconnected"] = True
                    return
                piece = (
                    pieces[0]
                    if pieces
                    else head + '{"content":"' + token(i) + '"},"logprobs":null,"finish_reason":null}]}\n\n'
                )
                await send({"type": "http.response.body", "body": piece.encode(), "more_body": True})
                sent += 1
                entry["completion_tokens"] = sent
            if fault == "cut":
                return  # uvicorn closes the connection: no finish chunk, no [DONE]
            if disconnect.done():
                entry["disconnected"] = True
                return
            tail = head + '{},"logprobs":null,"finish_reason":"' + finish + '"}]}\n\n'
            if include_usage:
                tail += (
                    prefix + '[],"usage":{"prompt_tokens":' + str(prompt_tokens) + ',"completion_tokens":' + str(sent)
                    + ',"total_tokens":' + str(prompt_tokens + sent) + "}}\n\n"
                )  # fmt: skip
            await send({"type": "http.response.body", "body": tail.encode(), "more_body": True})
            await send({"type": "http.response.body", "body": _DONE})
            entry["completed"] = True
        finally:
            if not disconnect.done():
                disconnect.cancel()


def create_app(config: MockConfig | None = None, **knobs: Any) -> MockUpstream:
    cfg = config or MockConfig()
    for key, value in knobs.items():
        if key not in KNOBS:
            raise TypeError(f"unknown knob {key!r}")
        setattr(cfg, key, _coerce(key, value))
    return MockUpstream(cfg)


app = MockUpstream(MockConfig.from_env())


# --------------------------------------------------------------------------- command line


def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
    """Shared by ``python -m jobs.mock_upstream`` and ``manage.py mock_llm_server``."""
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8100)
    parser.add_argument("--latency-ms", type=float, default=0.0, help="delay before the first byte")
    parser.add_argument("--chunk-delay-ms", type=float, default=0.0, help="delay between stream content chunks")
    parser.add_argument("--chunks", type=int, default=20, help="completion tokens per answer")
    for fault in FAULTS:
        parser.add_argument(f"--rate-{fault}", type=float, default=0.0, help=f"probability of the {fault} fault")
    parser.add_argument("--seed", type=int, default=0, help="seed of the fault RNG")


def config_from_options(options: Any) -> MockConfig:
    get = options.get if isinstance(options, dict) else lambda k: getattr(options, k)
    return MockConfig(**{k: _coerce(k, get(k)) for k in KNOBS})


def serve(host: str, port: int, config: MockConfig) -> None:
    import uvicorn

    app.base = config
    app.reset()
    uv_config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        lifespan="on",
        server_header=False,
        date_header=False,
        backlog=4096,
        timeout_graceful_shutdown=1,
    )
    install_log_filter()
    uvicorn.Server(uv_config).run()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="OpenAI-compatible mock LLM upstream")
    add_cli_arguments(parser)
    options = parser.parse_args(argv)
    serve(options.host, options.port, config_from_options(options))


if __name__ == "__main__":
    main()
