"""The mock LLM upstream (jobs/mock_upstream.py), served by a real uvicorn subprocess. No database."""

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"  # before anything imports litellm

import httpx
import pytest

pytestmark = pytest.mark.live

ROOT = Path(__file__).resolve().parent.parent
TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {}}}}]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class MockServer:
    def __init__(self, args: list[str]):
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tempfile.TemporaryFile()
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            [sys.executable, *args, "--port", str(self.port)], cwd=ROOT, env=env, stdout=self.log, stderr=self.log
        )

    def wait_ready(self) -> "MockServer":
        deadline = time.monotonic() + 20
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mock upstream exited early:\n{self.output()}")
            try:
                if httpx.get(self.url + "/health", timeout=0.5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"mock upstream did not start:\n{self.output()}")
            time.sleep(0.05)
        return self

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)
        self.log.close()


CLI_ARGS = [
    "manage.py",
    "mock_llm_server",
    "--host",
    "127.0.0.1",
    "--rate-429",
    "1.0",
    "--chunks",
    "3",
    "--latency-ms",
    "50",
]


@pytest.fixture(scope="module")
def cli_server():
    """`manage.py mock_llm_server` with flags; started early (not awaited) so Django's boot overlaps other tests."""
    server = MockServer(CLI_ARGS)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def mock_server(cli_server):
    server = MockServer(["-m", "jobs.mock_upstream", "--seed", "1"]).wait_ready()
    yield server
    server.stop()


@pytest.fixture
def mock(mock_server):
    """A client on the shared server, reset (knobs, fail_next, stats) before each test."""
    with httpx.Client(base_url=mock_server.url, timeout=10) as client:
        assert client.post("/_control", json={"reset": True}).status_code == 200
        client.port = mock_server.port
        yield client


def chat_body(content: str = "hello there world", model: str = "mock-model", **extra) -> dict:
    messages = [{"role": "system", "content": "You are helpful"}, {"role": "user", "content": content}]
    return {"model": model, "messages": messages, **extra}


def parse_sse(text: str) -> list:
    """Every event is `data: <payload>\\n\\n`; returns parsed chunks, with "[DONE]" kept as a string."""
    assert text.endswith("\n\n"), text[-80:]
    events = []
    for raw in text[:-2].split("\n\n"):
        assert raw.startswith("data: "), raw
        payload = raw[len("data: ") :]
        events.append(payload if payload == "[DONE]" else json.loads(payload))
    return events


def stream_events(client: httpx.Client, body: dict) -> list:
    response = client.post("/v1/chat/completions", json={**body, "stream": True})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/event-stream")
    return parse_sse(response.text)


def stats(client: httpx.Client) -> dict:
    return client.get("/_stats").json()


# --------------------------------------------------------------------------- shapes and accounting


def test_models_list(mock):
    body = mock.get("/v1/models").json()
    assert body["object"] == "list"
    ids = [m["id"] for m in body["data"]]
    assert "mock-model" in ids and "mock-fail-500" in ids
    assert all(m["object"] == "model" for m in body["data"])


def test_non_stream_shape_and_usage(mock):
    response = mock.post(
        "/v1/chat/completions", json=chat_body(model="my-model"), headers={"Authorization": "Bearer sk-whatever"}
    )
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["object"] == "chat.completion"
    assert body["id"].startswith("chatcmpl-") and isinstance(body["created"], int)
    assert body["model"] == "my-model"
    choice = body["choices"][0]
    assert choice["message"]["role"] == "assistant"
    assert choice["message"]["content"] == "".join(f"tok{i} " for i in range(20))
    assert "tool_calls" not in choice["message"]
    assert choice["finish_reason"] == "stop"
    # system "You are helpful" = 3 words + 3, user "hello there world" = 3 words + 3
    assert body["usage"] == {"prompt_tokens": 12, "completion_tokens": 20, "total_tokens": 32}


def test_prompt_tokens_is_deterministic_and_handles_content_parts(mock):
    messages = [
        {"role": "user", "content": [{"type": "text", "text": "one two"}, {"type": "text", "text": "three"}]},
        {"role": "assistant", "content": None, "tool_calls": []},
        {"role": "user", "content": ""},
    ]
    usages = [
        mock.post("/v1/chat/completions", json={"model": "m", "messages": messages}).json()["usage"] for _ in "ab"
    ]
    assert usages[0] == usages[1]
    assert usages[0]["prompt_tokens"] == (3 + 3) + 3 + 3


def test_max_tokens_gives_length(mock):
    body = mock.post("/v1/chat/completions", json=chat_body(max_tokens=5)).json()
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["choices"][0]["message"]["content"] == "tok0 tok1 tok2 tok3 tok4 "
    assert body["usage"]["completion_tokens"] == 5
    events = stream_events(mock, chat_body(max_tokens=5, stream_options={"include_usage": True}))
    assert [e["choices"][0]["finish_reason"] for e in events[:-2] if e["choices"]][-1] == "length"
    assert events[-2]["usage"]["completion_tokens"] == 5


def test_stream_framing(mock):
    events = stream_events(mock, chat_body(model="stream-model", stream_options={"include_usage": True}))
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert all(c["object"] == "chat.completion.chunk" and c["model"] == "stream-model" for c in chunks)
    assert len({c["id"] for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant"}
    content = chunks[1:21]
    assert [c["choices"][0]["delta"]["content"] for c in content] == [f"tok{i} " for i in range(20)]
    assert all(c["choices"][0]["finish_reason"] is None for c in content)
    assert chunks[21]["choices"][0]["finish_reason"] == "stop"
    assert chunks[21]["choices"][0]["delta"] == {}
    assert chunks[22]["choices"] == []
    assert chunks[22]["usage"] == {"prompt_tokens": 12, "completion_tokens": 20, "total_tokens": 32}
    assert len(chunks) == 23

    without_usage = stream_events(mock, chat_body())
    assert without_usage[-1] == "[DONE]"
    assert all("usage" not in c for c in without_usage[:-1])
    assert without_usage[-2]["choices"][0]["finish_reason"] == "stop"


@pytest.mark.parametrize(
    "content,extra",
    [
        ("plain question here", {}),
        ("fewer please [[mock:chunks=7]]", {}),
        ("capped", {"max_tokens": 3}),
        ("capped by max_completion_tokens", {"max_completion_tokens": 4}),
    ],
)
def test_stream_and_non_stream_usage_match(mock, content, extra):
    plain = mock.post("/v1/chat/completions", json=chat_body(content, **extra)).json()
    events = stream_events(mock, chat_body(content, stream_options={"include_usage": True}, **extra))
    assert events[-2]["usage"] == plain["usage"]
    streamed = "".join(c["choices"][0]["delta"].get("content") or "" for c in events[:-1] if c["choices"])
    assert streamed == plain["choices"][0]["message"]["content"]
    assert plain["usage"]["completion_tokens"] == sum(
        1 for c in events[:-1] if c["choices"] and c["choices"][0]["delta"].get("content")
    )


def test_stream_chunks_are_flushed_with_delay(mock):
    arrivals = []
    body = chat_body("[[mock:chunks=5]] [[mock:chunk_delay=100]]", stream=True)
    with mock.stream("POST", "/v1/chat/completions", json=body) as response:
        for line in response.iter_lines():
            if line.startswith("data: {") and '"content"' in line:
                arrivals.append(time.monotonic())
    assert len(arrivals) == 5
    assert arrivals[-1] - arrivals[0] >= 0.35  # 4 gaps of 100 ms, each chunk sent as it is produced


def test_tool_call_directive(mock):
    content = "weather in Paris? [[mock:tool=get_weather]]"
    body = mock.post("/v1/chat/completions", json=chat_body(content, tools=TOOLS)).json()
    choice = body["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] is None
    (call,) = choice["message"]["tool_calls"]
    assert call["type"] == "function" and call["function"] == {"name": "get_weather", "arguments": "{}"}
    assert body["usage"]["completion_tokens"] == 1

    events = stream_events(mock, chat_body(content, tools=TOOLS, stream_options={"include_usage": True}))
    assert events[1]["choices"][0]["delta"]["tool_calls"][0]["function"]["name"] == "get_weather"
    assert events[-3]["choices"][0]["finish_reason"] == "tool_calls"
    assert events[-2]["usage"] == body["usage"]

    # without `tools` in the request the directive does not produce a tool call
    plain = mock.post("/v1/chat/completions", json=chat_body(content)).json()
    assert plain["choices"][0]["finish_reason"] == "stop" and "tool_calls" not in plain["choices"][0]["message"]


def test_latency_knobs(mock):
    def elapsed(body: dict) -> float:
        start = time.monotonic()
        assert mock.post("/v1/chat/completions", json=body).status_code == 200
        return time.monotonic() - start

    assert elapsed(chat_body(model="mock-slow-300")) >= 0.3
    assert elapsed(chat_body("[[mock:latency=200]]")) >= 0.2
    mock.post("/_control", json={"latency_ms": 150})
    assert elapsed(chat_body()) >= 0.15
    mock.post("/_control", json={"reset": True})
    assert elapsed(chat_body()) < 0.15


# --------------------------------------------------------------------------- faults


def assert_fault(client: httpx.Client, fault: str, body: dict) -> None:
    """Send `body` (non-stream, and for cut/malformed also stream) and check it fails as `fault`."""
    if fault == "500":
        response = client.post("/v1/chat/completions", json=body)
        assert response.status_code == 500
        assert response.json()["error"]["type"] == "server_error"
    elif fault == "429":
        response = client.post("/v1/chat/completions", json=body)
        assert response.status_code == 429
        assert response.headers["retry-after"] == "1"
        error = response.json()["error"]
        assert set(error) >= {"message", "type", "code"}
    elif fault == "hang":
        start = time.monotonic()
        with pytest.raises(httpx.ReadTimeout):
            client.post("/v1/chat/completions", json=body, timeout=0.5)
        assert time.monotonic() - start < 2
    elif fault == "malformed":
        response = client.post("/v1/chat/completions", json=body)
        assert response.status_code == 200
        with pytest.raises(json.JSONDecodeError):
            json.loads(response.text)
    elif fault == "cut":
        with pytest.raises(httpx.RemoteProtocolError):
            client.post("/v1/chat/completions", json=body)
    else:  # pragma: no cover
        raise AssertionError(fault)


def assert_cut_stream(client: httpx.Client, body: dict) -> None:
    lines = []
    with pytest.raises(httpx.RemoteProtocolError):
        with client.stream("POST", "/v1/chat/completions", json={**body, "stream": True}) as response:
            assert response.status_code == 200
            for line in response.iter_lines():
                lines.append(line)
    data = [line for line in lines if line.startswith("data: ")]
    assert data, "some chunks arrive before the cut"
    assert "data: [DONE]" not in data
    assert all(json.loads(line[6:])["choices"][0]["finish_reason"] is None for line in data)


FAULT_MODELS = {
    "500": "mock-fail-500",
    "429": "mock-fail-429",
    "hang": "mock-hang",
    "malformed": "mock-malformed",
    "cut": "mock-cut",
}


@pytest.mark.parametrize("fault", list(FAULT_MODELS))
def test_fault_by_model_name(mock, fault):
    assert_fault(mock, fault, chat_body(model=FAULT_MODELS[fault]))
    if fault != "hang":  # (one hang is enough: each costs the 0.5 s client timeout)
        assert_fault(mock, fault, chat_body(model="openai/" + FAULT_MODELS[fault]))  # prefixed names too
    entry = stats(mock)["served"][-1]
    assert entry["fault"] == fault


@pytest.mark.parametrize("fault", list(FAULT_MODELS))
def test_fault_by_directive(mock, fault):
    assert_fault(mock, fault, chat_body(f"please fail [[mock:fault={fault}]] now"))
    # only the last user message is read
    messages = [
        {"role": "user", "content": f"[[mock:fault={fault}]]"},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": "fine now"},
    ]
    assert mock.post("/v1/chat/completions", json={"model": "m", "messages": messages}).status_code == 200


@pytest.mark.parametrize("fault", list(FAULT_MODELS))
def test_fault_by_control_fail_next(mock, fault):
    response = mock.post("/_control", json={"fail_next": 2, "fault": fault})
    assert response.status_code == 200 and response.json()["fail_next"] == 2
    assert_fault(mock, fault, chat_body())
    assert_fault(mock, fault, chat_body())
    assert mock.post("/v1/chat/completions", json=chat_body()).status_code == 200
    assert mock.get("/_control").json()["fail_next"] == 0


@pytest.mark.parametrize("fault", list(FAULT_MODELS))
def test_fault_by_rate(mock, fault):
    assert mock.post("/_control", json={f"rate_{fault}": 1.0}).status_code == 200
    assert_fault(mock, fault, chat_body())
    assert_fault(mock, fault, chat_body())
    mock.post("/_control", json={"reset": True})
    assert mock.post("/v1/chat/completions", json=chat_body()).status_code == 200


def test_rates_are_reproducible_with_seed(mock):
    def run() -> list[int]:
        mock.post("/_control", json={"reset": True, "rate_500": 0.3, "rate_429": 0.3, "seed": 42})
        return [mock.post("/v1/chat/completions", json=chat_body()).status_code for _ in range(30)]

    first = run()
    assert first == run()
    assert {200, 429, 500} <= set(first)


def test_stream_faults(mock):
    assert_cut_stream(mock, chat_body(model="mock-cut"))
    assert_cut_stream(mock, chat_body("[[mock:fault=cut]]"))
    # malformed stream: 200 SSE with an unparsable event
    response = mock.post("/v1/chat/completions", json=chat_body(model="mock-malformed", stream=True))
    assert response.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        parse_sse(response.text)
    # 500/429 on a stream request are plain JSON errors
    response = mock.post("/v1/chat/completions", json=chat_body(model="mock-fail-429", stream=True))
    assert response.status_code == 429 and response.headers["retry-after"] == "1"
    with pytest.raises(httpx.ReadTimeout):
        mock.post("/v1/chat/completions", json=chat_body(model="mock-hang", stream=True), timeout=0.5)
    served = stats(mock)["served"]
    assert [e["completed"] for e in served] == [False, False, True, True, False]
    assert served[0]["completion_tokens"] == 10  # half of 20 before the cut


# --------------------------------------------------------------------------- errors, control, stats


def test_bad_requests(mock):
    response = mock.post("/v1/chat/completions", content=b"{not json", headers={"content-type": "application/json"})
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert response.json()["error"]["code"] == "invalid_json"
    for body in ({"model": "m"}, {"model": "m", "messages": []}, {"model": "m", "messages": "hi"}, [1, 2]):
        response = mock.post("/v1/chat/completions", json=body)
        assert response.status_code == 400
        assert set(response.json()["error"]) >= {"message", "type", "code"}
    assert mock.post("/v1/chat/completions", json=chat_body("[[mock:fault=teapot]]")).status_code == 400
    response = mock.get("/v1/nope")
    assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"
    assert mock.post("/_control", json={"no_such_knob": 1}).status_code == 400
    assert mock.post("/_control", json={"fault": "teapot"}).status_code == 400
    data = stats(mock)
    assert data["requests"] == 6 and data["rejected"] == 6 and data["served"] == []


def test_control_knobs_and_reset(mock):
    state = mock.post("/_control", json={"chunks": 4, "chunk_delay_ms": 1, "latency_ms": 1}).json()
    assert state["config"]["chunks"] == 4
    body = mock.post("/v1/chat/completions", json=chat_body()).json()
    assert body["usage"]["completion_tokens"] == 4
    assert (
        len([e for e in stream_events(mock, chat_body()) if e != "[DONE]" and e["choices"][0]["delta"].get("content")])
        == 4
    )
    assert mock.post("/_control", json={"reset": True}).json()["config"]["chunks"] == 20
    assert mock.post("/v1/chat/completions", json=chat_body()).json()["usage"]["completion_tokens"] == 20


def test_stats(mock):
    mock.post("/v1/chat/completions", json=chat_body(model="a"))
    mock.post("/v1/chat/completions", json=chat_body(model="a", stream=True))
    mock.post("/v1/chat/completions", json=chat_body(model="b", max_tokens=2))
    mock.post("/v1/chat/completions", json=chat_body(model="mock-fail-500"))
    data = stats(mock)
    assert data["requests"] == 4
    assert data["by_model"] == {"a": 2, "b": 1, "mock-fail-500": 1}
    assert [e["request_index"] for e in data["served"]] == [1, 2, 3, 4]
    first, second, third, fourth = data["served"]
    for entry in data["served"]:
        assert set(entry) >= {
            "request_index",
            "model",
            "stream",
            "prompt_tokens",
            "completion_tokens",
            "fault",
            "completed",
        }
    assert (first["stream"], second["stream"]) == (False, True)
    assert first["completion_tokens"] == second["completion_tokens"] == 20 and third["completion_tokens"] == 2
    assert first["prompt_tokens"] == 12 and first["completed"] and second["completed"] and first["fault"] is None
    assert fourth["fault"] == "500" and fourth["completion_tokens"] == 0
    assert len(mock.get("/_stats", params={"last": 2}).json()["served"]) == 2


def test_client_disconnect_mid_stream_is_recorded(mock):
    body = chat_body("[[mock:chunks=20]] [[mock:chunk_delay=50]]", stream=True)
    received = 0
    with mock.stream("POST", "/v1/chat/completions", json=body) as response:
        for line in response.iter_lines():
            if '"content"' in line:
                received += 1
                if received == 3:
                    break  # leaving the block closes the connection
    deadline = time.monotonic() + 3
    while True:
        entry = stats(mock)["served"][-1]
        if entry["disconnected"] or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert entry["disconnected"] and entry["completed"] is False
    assert 3 <= entry["completion_tokens"] < 20


# --------------------------------------------------------------------------- litellm against the mock


def test_litellm_non_stream_and_errors(mock):
    import litellm

    litellm.suppress_debug_info = True
    base = f"http://127.0.0.1:{mock.port}/v1"
    messages = [{"role": "user", "content": "hello there world"}]
    response = litellm.completion(model="openai/mock-model", api_base=base, api_key="sk-mock", messages=messages)
    assert response.choices[0].message.content == "".join(f"tok{i} " for i in range(20))
    assert response.choices[0].finish_reason == "stop"
    assert (response.usage.prompt_tokens, response.usage.completion_tokens, response.usage.total_tokens) == (6, 20, 26)

    with pytest.raises(litellm.RateLimitError):
        litellm.completion(
            model="openai/mock-fail-429", api_base=base, api_key="sk-mock", messages=messages, max_retries=0
        )
    with pytest.raises(litellm.InternalServerError):
        litellm.completion(
            model="openai/mock-fail-500", api_base=base, api_key="sk-mock", messages=messages, max_retries=0
        )
    with pytest.raises(litellm.Timeout):
        litellm.completion(
            model="openai/mock-hang", api_base=base, api_key="sk-mock", messages=messages, max_retries=0, timeout=0.5
        )


def test_litellm_stream_with_usage(mock):
    import litellm

    litellm.suppress_debug_info = True
    base = f"http://127.0.0.1:{mock.port}/v1"
    messages = [{"role": "user", "content": "hello there world [[mock:chunks=6]]"}]
    chunks = list(
        litellm.completion(
            model="openai/mock-model",
            api_base=base,
            api_key="sk-mock",
            messages=messages,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "tok0 tok1 tok2 tok3 tok4 tok5 "
    usages = [c.usage for c in chunks if getattr(c, "usage", None)]
    assert usages, "the usage chunk reaches the litellm caller"
    assert (usages[-1].prompt_tokens, usages[-1].completion_tokens) == (7, 6)
    assert stats(mock)["served"][-1]["completed"] is True


# --------------------------------------------------------------------------- the management command


def test_management_command_flags(cli_server):
    server = cli_server.wait_ready()
    with httpx.Client(base_url=server.url, timeout=5) as client:
        start = time.monotonic()
        response = client.post("/v1/chat/completions", json=chat_body())
        assert response.status_code == 429 and response.headers["retry-after"] == "1"
        assert time.monotonic() - start >= 0.05
        client.post("/_control", json={"reset": True})  # back to the command-line knobs
        assert client.post("/v1/chat/completions", json=chat_body()).status_code == 429
        client.post("/_control", json={"rate_429": 0})
        body = client.post("/v1/chat/completions", json=chat_body()).json()
        assert body["usage"]["completion_tokens"] == 3
