"""The OpenAI-compatible routes (SPEC §5.2 beyond) driven by the official `openai` SDK against a live
uvicorn server: POST /v1/chat/completions (non-stream, stream, tools, X-Job-Id), GET /v1/models, and
OpenAI-shaped errors with OpenAI's status codes. Setup and bookkeeping checks use the gateway's own
API (GET /api/jobs, /api/credits/balance) over HTTP with the demo keys from `seed_demo`.
"""

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
import pytest

from tests.live import ServerProcess

pytestmark = pytest.mark.live

PROJECT = Path(__file__).resolve().parent.parent
TEAM = "acme-corp"
LIMITED_TEAM = "acme-limited"
# The mock answers `chunks` (default 20) tokens "tok0 " … "tok19 " and counts a prompt as words + 3.
ANSWER = "".join(f"tok{i} " for i in range(20))


@dataclass
class Gateway:
    url: str
    admin_key: str
    team_key: str
    limited_key: str
    broke_key: str
    idle_key: str
    http: httpx.Client
    mock: object  # tests.live.MockControl

    def api(self, method: str, path: str, key: str | None = None, **kwargs) -> httpx.Response:
        headers = {"Authorization": f"Bearer {key or self.team_key}", **kwargs.pop("headers", {})}
        return self.http.request(method, path, headers=headers, **kwargs)

    def client(self, key: str | None = None) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=key or self.team_key, max_retries=0, timeout=30)

    def async_client(self, key: str | None = None) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(base_url=f"{self.url}/v1", api_key=key or self.team_key, max_retries=0, timeout=30)

    def job(self, job_id: str) -> dict:
        response = self.api("GET", f"/api/jobs/{job_id}")
        assert response.status_code == 200, response.text
        return response.json()

    def jobs(self, key: str | None = None) -> dict:
        response = self.api("GET", "/api/jobs", key=key, params={"limit": 1000})
        assert response.status_code == 200, response.text
        return response.json()

    def balance(self, key: str | None = None) -> dict:
        response = self.api("GET", "/api/credits/balance", key=key)
        assert response.status_code == 200, response.text
        return response.json()

    def books(self, key: str | None = None) -> tuple[int, dict]:
        """(number of jobs, balance) of the key's team: what a refused request must leave untouched."""
        return self.jobs(key)["count"], self.balance(key)


def _manage(env: dict, *args: str) -> None:
    done = subprocess.run(
        [sys.executable, "manage.py", *args], cwd=PROJECT, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.fixture(scope="module")
def gw(tmp_path_factory, mock_upstream):
    tmp = tmp_path_factory.mktemp("openai-compat")
    env = {
        **{k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL")},
        "DATABASE_URL": f"sqlite:///{tmp / 'db.sqlite3'}",
        "SECRET_KEY": "x",
        "DEBUG": "0",
        "REDIS_URL": "",
        "PYTHONUNBUFFERED": "1",
        # The router's retries only add back-off sleeps to the provider-failure test.
        "SAAS_LLM_NUM_RETRIES": "0",
    }
    mock_port = mock_upstream.url.rsplit(":", 1)[1]

    def prepare_database() -> None:
        _manage(env, "migrate", "--noinput")
        _manage(env, "seed_demo", "--mock-port", mock_port, "--keys-file", str(tmp / "keys.json"))

    # uvicorn spends most of its start-up importing litellm: prepare the database meanwhile.
    with ThreadPoolExecutor(max_workers=1) as pool:
        prepared = pool.submit(prepare_database)
        server = ServerProcess(
            [sys.executable, "-m", "uvicorn", "saas_llm.asgi:application", "--host", "127.0.0.1", "--port", "{port}"],
            env=env,
            timeout=90,
        )
        try:
            prepared.result()
        except BaseException:
            server.stop()
            raise
    keys = json.loads((tmp / "keys.json").read_text())
    try:
        with httpx.Client(base_url=server.url, timeout=30, trust_env=False) as http:
            admin = {"Authorization": f"Bearer {keys['admin_key']}"}
            upstream = f"{mock_upstream.url}/v1"

            def setup(method: str, path: str, body: dict, status: int) -> dict:
                response = http.request(method, path, json=body, headers=admin)
                assert response.status_code == status, (path, response.text)
                return response.json()

            # Allowed to acme-corp (group `standard`), but its only deployment always answers 500.
            setup("POST", "/api/model-aliases/create", {
                "alias_name": "chat-broken", "access_groups": ["standard"],
                "deployments": [{"litellm_model": "openai/mock-fail-500", "api_base": upstream, "timeout_s": 5}],
            }, 201)  # fmt: skip
            # In `standard` but inactive: not an allowed alias.
            setup("POST", "/api/model-aliases/create", {
                "alias_name": "chat-retired", "status": "inactive", "access_groups": ["standard"],
                "deployments": [{"litellm_model": "openai/mock-model", "api_base": upstream}],
            }, 201)  # fmt: skip
            # Exists and is active, but only in a group acme-corp does not have.
            setup("POST", "/api/model-aliases/create", {
                "alias_name": "chat-premium",
                "deployments": [{"litellm_model": "openai/mock-model", "api_base": upstream}],
            }, 201)  # fmt: skip
            setup(
                "POST",
                "/api/model-access-groups/create",
                {"group_name": "premium", "model_aliases": ["chat-premium"]},
                201,
            )
            # A second team of the demo organization, for the rate limit (so acme-corp stays unlimited).
            limited = setup("POST", "/api/teams/create", {
                "team_id": LIMITED_TEAM, "organization_id": "acme", "access_groups": ["standard"],
                "default_model": "chat-fast", "credits_allocated": 10,
            }, 201)  # fmt: skip
            setup("PUT", f"/api/teams/{LIMITED_TEAM}", {"rpm_limit": 1}, 200)
            # Its stream is cut by the provider half-way.
            setup("POST", "/api/model-aliases/create", {
                "alias_name": "chat-cut", "access_groups": ["standard"],
                "deployments": [{"litellm_model": "openai/mock-cut", "api_base": upstream, "timeout_s": 5}],
            }, 201)  # fmt: skip
            # Teams refused before the provider for their own reasons: no credits, suspended.
            broke = setup("POST", "/api/teams/create", {
                "team_id": "acme-broke", "organization_id": "acme", "access_groups": ["standard"], "credits_allocated": 0,
            }, 201)  # fmt: skip
            idle = setup("POST", "/api/teams/create", {
                "team_id": "acme-idle", "organization_id": "acme", "access_groups": ["standard"], "credits_allocated": 5,
            }, 201)  # fmt: skip
            setup("POST", "/api/teams/acme-idle/suspend", {}, 200)
            yield Gateway(
                url=server.url,
                admin_key=keys["admin_key"],
                team_key=keys["team_key"],
                limited_key=limited["virtual_key"],
                broke_key=broke["virtual_key"],
                idle_key=idle["virtual_key"],
                http=http,
                mock=mock_upstream,
            )
    finally:
        server.stop()


def _user(text: str = "Say hello to the world") -> list[dict]:
    return [{"role": "user", "content": text}]


PROMPT_TOKENS = len("Say hello to the world".split()) + 3


# --- non-stream ----------------------------------------------------------------------------------


def test_non_stream_completion_is_a_completed_charged_single_call_job(gw):
    before = gw.balance()
    raw = gw.client().chat.completions.with_raw_response.create(model="chat-fast", messages=_user())
    completion = raw.parse()

    assert completion.object == "chat.completion"
    assert completion.model == "chat-fast"  # the alias, never the provider model (openai/demo-model)
    assert completion.choices[0].message.role == "assistant"
    assert completion.choices[0].message.content == ANSWER
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage.prompt_tokens == PROMPT_TOKENS
    assert completion.usage.completion_tokens == 20
    assert completion.usage.total_tokens == PROMPT_TOKENS + 20

    job_id = raw.headers["x-job-id"]
    job = gw.job(job_id)
    assert job["job_type"] == "chat.completions"
    assert job["status"] == "completed"
    assert job["total_calls"] == job["successful_calls"] == 1
    assert job["total_tokens"] == PROMPT_TOKENS + 20
    assert job["models_used"] == ["chat-fast"]
    assert job["credits_charged"] == 1  # job mode, credits_per_job 1
    after = gw.balance()
    assert after["credits_used"] == before["credits_used"] + 1
    assert after["credits_remaining"] == before["credits_remaining"] - 1
    assert after["credits_reserved"] == before["credits_reserved"]  # the reservation was released


def test_only_sent_parameters_reach_the_provider_and_max_tokens_is_honoured(gw):
    completion = gw.client().chat.completions.create(model="chat-fast", messages=_user(), max_tokens=3)
    assert completion.choices[0].message.content == "tok0 tok1 tok2 "
    assert completion.choices[0].finish_reason == "length"
    assert completion.usage.completion_tokens == 3


# --- stream --------------------------------------------------------------------------------------


def test_stream_with_include_usage_ends_with_a_usage_chunk(gw):
    raw = gw.client().chat.completions.with_raw_response.create(
        model="chat-fast", messages=_user(), stream=True, stream_options={"include_usage": True}
    )
    assert raw.headers["content-type"].startswith("text/event-stream")
    chunks = list(raw.parse())

    content_chunks, last = chunks[:-1], chunks[-1]
    assert all(chunk.object == "chat.completion.chunk" and chunk.model == "chat-fast" for chunk in chunks)
    assert all(chunk.usage is None for chunk in content_chunks)
    assert "".join(chunk.choices[0].delta.content or "" for chunk in content_chunks if chunk.choices) == ANSWER
    assert [c.choices[0].finish_reason for c in content_chunks if c.choices and c.choices[0].finish_reason] == ["stop"]
    assert last.choices == []
    assert (last.usage.prompt_tokens, last.usage.completion_tokens, last.usage.total_tokens) == (
        PROMPT_TOKENS,
        20,
        PROMPT_TOKENS + 20,
    )

    job = gw.job(raw.headers["x-job-id"])
    assert (job["job_type"], job["status"], job["total_calls"], job["credits_charged"]) == (
        "chat.completions",
        "completed",
        1,
        1,
    )
    assert job["total_tokens"] == PROMPT_TOKENS + 20


def test_stream_without_include_usage_has_no_usage_chunk(gw):
    raw = gw.client().chat.completions.with_raw_response.create(model="chat-fast", messages=_user(), stream=True)
    chunks = list(raw.parse())

    assert chunks, "no chunk at all"
    assert all(chunk.usage is None for chunk in chunks)
    assert all(chunk.choices for chunk in chunks)  # no trailing empty-choices (usage) chunk
    assert "".join(chunk.choices[0].delta.content or "" for chunk in chunks) == ANSWER
    assert chunks[-1].choices[0].finish_reason == "stop"
    # The job still knows the usage (recorded from the provider) and is completed and charged.
    job = gw.job(raw.headers["x-job-id"])
    assert (job["status"], job["total_tokens"], job["credits_charged"]) == ("completed", PROMPT_TOKENS + 20, 1)


# --- tools ---------------------------------------------------------------------------------------

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


def test_tool_call_comes_back_as_openai_tool_calls(gw):
    completion = gw.client().chat.completions.create(
        model="chat-fast", messages=_user("Weather in Paris? [[mock:tool=get_weather]]"), tools=[WEATHER_TOOL]
    )
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    assert len(choice.message.tool_calls) == 1
    call = choice.message.tool_calls[0]
    assert call.type == "function"
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {}
    assert call.id


def test_tool_call_in_a_stream(gw):
    stream = gw.client().chat.completions.create(
        model="chat-fast",
        messages=_user("Weather in Paris? [[mock:tool=get_weather]]"),
        tools=[WEATHER_TOOL],
        stream=True,
    )
    chunks = list(stream)
    names = [
        call.function.name
        for chunk in chunks
        for choice in chunk.choices
        for call in (choice.delta.tool_calls or [])
        if call.function and call.function.name
    ]
    assert names == ["get_weather"]
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["tool_calls"]


# --- X-Job-Id ------------------------------------------------------------------------------------


def test_x_job_id_attaches_the_call_to_an_open_job(gw):
    created = gw.api("POST", "/api/jobs/create", json={"job_type": "resume.parse"})
    assert created.status_code == 201, created.text
    job_id = created.json()["job_id"]
    jobs_before, balance_before = gw.books()

    client = gw.client()
    raw = client.chat.completions.with_raw_response.create(
        model="chat-fast", messages=_user(), extra_headers={"X-Job-Id": job_id}
    )
    assert raw.parse().choices[0].message.content == ANSWER
    assert raw.headers["x-job-id"] == job_id
    stream = client.chat.completions.create(
        model="chat-fast", messages=_user(), stream=True, extra_headers={"X-Job-Id": job_id}
    )
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == ANSWER

    job = gw.job(job_id)
    assert job["job_type"] == "resume.parse"  # not turned into a chat.completions job
    assert job["status"] == "in_progress"
    assert job["total_calls"] == 2
    assert job["total_tokens"] == 2 * (PROMPT_TOKENS + 20)
    assert job["credits_charged"] == 0
    jobs_after, balance_after = gw.books()
    assert jobs_after == jobs_before  # no single-call job was created
    assert balance_after["credits_used"] == balance_before["credits_used"]  # not charged while open

    completed = gw.api("POST", f"/api/jobs/{job_id}/complete", json={"status": "completed"})
    assert completed.status_code == 200, completed.text
    assert completed.json()["credits_charged"] == 1
    assert completed.json()["costs"]["total_calls"] == 2
    assert gw.balance()["credits_used"] == balance_before["credits_used"] + 1


def test_x_job_id_of_a_finished_job_is_refused(gw):
    created = gw.api("POST", "/api/jobs/create", json={"job_type": "done"}).json()
    assert gw.api("POST", f"/api/jobs/{created['job_id']}/complete", json={"status": "cancelled"}).status_code == 200
    requests_before = gw.mock.requests
    with pytest.raises(openai.ConflictError) as caught:
        gw.client().chat.completions.create(
            model="chat-fast", messages=_user(), extra_headers={"X-Job-Id": created["job_id"]}
        )
    assert caught.value.status_code == 409
    assert caught.value.code == "job_already_finished"
    assert gw.job(created["job_id"])["total_calls"] == 0
    assert gw.mock.requests == requests_before


def test_x_job_id_of_another_team_is_not_found(gw):
    other = gw.api("POST", "/api/jobs/create", key=gw.limited_key, json={"job_type": "theirs"}).json()
    with pytest.raises(openai.NotFoundError):
        gw.client().chat.completions.create(
            model="chat-fast", messages=_user(), extra_headers={"X-Job-Id": other["job_id"]}
        )
    assert gw.api("GET", f"/api/jobs/{other['job_id']}").status_code == 404  # acme-corp cannot see it either
    assert gw.api("GET", f"/api/jobs/{other['job_id']}", key=gw.limited_key).json()["total_calls"] == 0


# --- /v1/models ----------------------------------------------------------------------------------


def test_models_lists_the_teams_allowed_aliases(gw):
    models = gw.client().models.list()
    ids = [model.id for model in models.data]
    # chat-retired is in `standard` but inactive; chat-premium is active but in a group the team lacks.
    assert sorted(ids) == ["chat-broken", "chat-cut", "chat-fast"]
    assert all(model.object == "model" and model.owned_by and model.created > 0 for model in models.data)


def test_models_needs_a_valid_key(gw):
    with pytest.raises(openai.AuthenticationError) as caught:
        gw.client(key="sk-" + "x" * 40).models.list()
    assert caught.value.status_code == 401


# --- errors: OpenAI's shape and status codes, and nothing left in the books ----------------------


REFUSALS = [
    pytest.param(
        {"key": "sk-" + "0" * 43}, {"model": "chat-fast"}, openai.AuthenticationError, 401, None, id="bad-key"
    ),
    pytest.param(
        {}, {"model": "chat-premium"}, openai.PermissionDeniedError, 403, "model_not_allowed", id="not-allowed"
    ),
    pytest.param({}, {"model": "no-such-model"}, openai.NotFoundError, 404, "model_not_found", id="unknown-model"),
    # Known but inactive: not allowed (SPEC §5.6), never "unknown" (was a 404).
    pytest.param(
        {}, {"model": "chat-retired"}, openai.PermissionDeniedError, 403, "model_not_allowed", id="inactive-model"
    ),
    pytest.param({}, {"model": "chat-fast", "messages": []}, openai.BadRequestError, 400, None, id="empty-messages"),
    pytest.param(
        {}, {"model": "chat-fast", "temperature": 7}, openai.BadRequestError, 400, None, id="temperature-out-of-range"
    ),
]


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize(("client_kwargs", "body", "error", "status", "code"), REFUSALS)
def test_refused_requests_use_openai_errors_and_leave_no_job_or_charge(
    gw, client_kwargs, body, error, status, code, stream
):
    jobs_before, balance_before = gw.books()
    requests_before = gw.mock.requests
    request = {"messages": _user(), **body}
    if stream:
        request["stream"] = True

    with pytest.raises(error) as caught:
        gw.client(**client_kwargs).chat.completions.create(**request)

    exc = caught.value
    assert exc.status_code == status
    assert set(exc.response.json()) == {"error"}  # OpenAI's shape, not {"detail": …}
    assert {"message", "type", "code"} <= set(exc.response.json()["error"])
    assert exc.message and isinstance(exc.body["message"], str)
    if code is not None:
        assert exc.code == code
    if status == 400:
        assert exc.type == "invalid_request_error"
        assert exc.param == next(iter(set(body) - {"model"}))
    if status == 401:
        assert exc.type == "authentication_error"
        assert exc.response.headers["www-authenticate"].startswith("Bearer")
    if status == 403:
        assert exc.type == "permission_error"
    assert gw.books() == (jobs_before, balance_before)
    assert gw.mock.requests == requests_before  # the provider was never called


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize("text", ["a\x00b", "a\ud800b", "\udfff"], ids=["nul", "lone-high", "lone-low"])
def test_unstorable_text_is_a_400_before_the_provider_and_never_cools_the_alias_down(gw, text, stream):
    """Found by an attacker: a lone surrogate failed in the provider client, was counted as a provider
    failure, and three of them cooled `chat-fast` down for every team for 30 s; a NUL reached the
    provider and then could not be stored. Both are refused before anything is called or written."""
    jobs_before, balance_before = gw.books()
    requests_before = gw.mock.requests
    # ASCII JSON (\\ud800 escaped): the SDK sends UTF-8, which cannot even encode a lone surrogate.
    raw = json.dumps({"model": "chat-fast", "stream": stream, "messages": [{"role": "user", "content": text}]})
    for _ in range(4):  # SAAS_LLM_ALLOWED_FAILS is 3
        response = gw.api("POST", "/v1/chat/completions", content=raw, headers={"Content-Type": "application/json"})
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert (error["type"], error["param"], error["code"]) == (
            "invalid_request_error",
            "messages.0.content",
            "invalid_request",
        )
    assert gw.books() == (jobs_before, balance_before)
    assert gw.mock.requests == requests_before
    # The alias still serves (the same deployment, any team).
    served = gw.client().chat.completions.create(model="chat-fast", messages=_user())
    assert served.choices[0].message.content == ANSWER


def test_idempotency_answers_on_v1_use_openai_errors_and_replay_every_header(gw):
    key = {"Idempotency-Key": f"v1-{uuid.uuid4()}"}
    first = gw.api("POST", "/v1/chat/completions", json={"model": "chat-fast", "messages": _user()}, headers=key)
    replay = gw.api("POST", "/v1/chat/completions", json={"model": "chat-fast", "messages": _user()}, headers=key)
    mismatch = gw.api("POST", "/v1/chat/completions", json={"model": "chat-fast", "messages": _user("hi")}, headers=key)
    empty = gw.api(
        "POST",
        "/v1/chat/completions",
        json={"model": "chat-fast", "messages": _user()},
        headers={"Idempotency-Key": ""},
    )

    assert first.status_code == replay.status_code == 200
    assert replay.headers["Idempotent-Replayed"] == "true" and replay.json() == first.json()
    assert (replay.headers["X-Job-Id"], replay.headers["X-Call-Id"]) == (
        first.headers["X-Job-Id"],
        first.headers["X-Call-Id"],
    )
    assert mismatch.status_code == 422
    assert mismatch.json() == {
        "error": {
            "message": "Idempotency-Key was used with a different request",
            "type": "invalid_request_error",
            "param": None,
            "code": "idempotency_mismatch",
        }
    }
    assert empty.status_code == 400
    assert empty.json()["error"]["code"] == "invalid_idempotency_key"


def test_idempotency_key_in_progress_on_v1_is_an_openai_409(gw):
    key = {"Idempotency-Key": f"v1-slow-{uuid.uuid4()}"}
    slow = {"model": "chat-fast", "messages": _user("hello [[mock:latency=1500]]")}
    requests_before = gw.mock.requests
    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(gw.api, "POST", "/v1/chat/completions", json=slow, headers=key)
        deadline = time.monotonic() + 30
        while gw.mock.requests == requests_before:  # wait until the first request is at the provider
            assert time.monotonic() < deadline
            time.sleep(0.02)
        during = gw.api("POST", "/v1/chat/completions", json=slow, headers=key)
        assert first.result().status_code == 200

    assert during.status_code == 409
    assert during.json()["error"] == {
        "message": "A request with this Idempotency-Key is still in progress",
        "type": "invalid_request_error",
        "param": None,
        "code": "idempotency_in_progress",
    }


def test_stream_refuses_an_idempotency_key(gw):
    jobs_before, balance_before = gw.books()
    with pytest.raises(openai.BadRequestError) as caught:
        gw.client().chat.completions.create(
            model="chat-fast", messages=_user(), stream=True, extra_headers={"Idempotency-Key": "stream-1"}
        )
    assert caught.value.status_code == 400
    assert set(caught.value.response.json()) == {"error"}
    assert gw.books() == (jobs_before, balance_before)


def test_rate_limited_request_is_a_429_and_leaves_no_job_or_charge(gw):
    client = gw.client(key=gw.limited_key)
    ok = client.chat.completions.with_raw_response.create(model="chat-fast", messages=_user())
    assert ok.parse().choices[0].message.content == ANSWER
    assert ok.headers["x-ratelimit-limit-requests"] == "1"
    assert ok.headers["x-ratelimit-remaining-requests"] == "0"
    jobs_before, balance_before = gw.books(gw.limited_key)
    requests_before = gw.mock.requests

    for stream in (False, True):
        with pytest.raises(openai.RateLimitError) as caught:
            client.chat.completions.create(model="chat-fast", messages=_user(), stream=stream)
        exc = caught.value
        assert exc.status_code == 429
        assert exc.type == "rate_limit_error"
        assert exc.code == "rate_limited"
        assert int(exc.response.headers["retry-after"]) >= 1

    assert gw.books(gw.limited_key) == (jobs_before, balance_before)
    assert gw.mock.requests == requests_before


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_provider_failure_is_a_502_and_leaves_a_failed_uncharged_job(gw, stream):
    jobs_before, balance_before = gw.books()
    failed_before = {job["job_id"] for job in gw.jobs()["results"] if job["status"] == "failed"}

    with pytest.raises(openai.InternalServerError) as caught:
        gw.client().chat.completions.create(model="chat-broken", messages=_user(), stream=stream)

    exc = caught.value
    assert exc.status_code == 502
    assert set(exc.response.json()) == {"error"}
    assert exc.code == "upstream_error"
    listing = gw.jobs()
    assert listing["count"] == jobs_before + 1
    failed = [job for job in listing["results"] if job["status"] == "failed" and job["job_id"] not in failed_before]
    assert len(failed) == 1
    job = gw.job(failed[0]["job_id"])
    _assert_failed_uncharged(job, "chat-broken")
    assert job["error_message"] == exc.response.json()["error"]["message"]  # what the client was told
    _assert_nothing_charged(gw.balance(), balance_before)


def test_stream_cut_by_the_provider_fails_the_job_without_charge(gw):
    jobs_before, balance_before = gw.books()
    raw = gw.client().chat.completions.with_raw_response.create(model="chat-cut", messages=_user(), stream=True)
    job_id = raw.headers["x-job-id"]
    received = []
    with pytest.raises(openai.APIError) as caught:  # the SSE error event, after the first chunks
        for chunk in raw.parse():
            received.extend(choice.delta.content or "" for choice in chunk.choices)
    assert "".join(received) and ANSWER.startswith("".join(received)) and "".join(received) != ANSWER
    assert caught.value.message

    assert gw.jobs()["count"] == jobs_before + 1
    job = gw.job(job_id)
    _assert_failed_uncharged(job, "chat-cut")
    assert job["error_message"] == caught.value.message
    _assert_nothing_charged(gw.balance(), balance_before)


def _assert_failed_uncharged(job: dict, alias: str) -> None:
    assert job["status"] == "failed"
    assert job["job_type"] == "chat.completions"
    assert job["models_used"] == [alias]
    assert job["credits_charged"] == 0
    assert (job["total_calls"], job["failed_calls"], job["successful_calls"]) == (1, 1, 0)
    assert job["completed_at"] is not None


def _assert_nothing_charged(after: dict, before: dict) -> None:
    assert after["credits_used"] == before["credits_used"]
    assert after["credits_reserved"] == before["credits_reserved"]  # the reservation was released
    assert after["credits_remaining"] == before["credits_remaining"]


@pytest.mark.parametrize(("team_key", "code"), [("broke_key", "insufficient_credits"), ("idle_key", "team_suspended")])
@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_team_refused_before_the_provider_leaves_no_job(gw, team_key, code, stream):
    key = getattr(gw, team_key)
    jobs_before, balance_before = gw.books(key)
    requests_before = gw.mock.requests

    with pytest.raises(openai.PermissionDeniedError) as caught:
        gw.client(key=key).chat.completions.create(model="chat-fast", messages=_user(), stream=stream)

    assert caught.value.status_code == 403
    assert caught.value.code == code
    assert caught.value.type == "permission_error"
    assert gw.books(key) == (jobs_before, balance_before)
    assert jobs_before == 0
    assert gw.mock.requests == requests_before


def test_admin_key_must_name_the_team(gw):
    jobs_before = gw.jobs()["count"]
    with pytest.raises(openai.BadRequestError) as caught:
        gw.client(key=gw.admin_key).chat.completions.create(model="chat-fast", messages=_user())
    assert caught.value.code == "team_required"
    completion = gw.client(key=gw.admin_key).chat.completions.create(
        model="chat-fast", messages=_user(), extra_headers={"X-Team-Id": TEAM}
    )
    assert completion.choices[0].message.content == ANSWER
    assert gw.jobs()["count"] == jobs_before + 1


# --- AsyncOpenAI ---------------------------------------------------------------------------------


def test_async_client_non_stream_and_stream(gw):
    async def run():
        async with gw.async_client() as client:
            raw = await client.chat.completions.with_raw_response.create(model="chat-fast", messages=_user())
            completion = raw.parse()
            stream = await client.chat.completions.create(
                model="chat-fast", messages=_user(), stream=True, stream_options={"include_usage": True}
            )
            chunks = [chunk async for chunk in stream]
            return raw.headers["x-job-id"], completion, chunks

    job_id, completion, chunks = asyncio.run(run())

    assert completion.model == "chat-fast"
    assert completion.choices[0].message.content == ANSWER
    assert completion.usage.total_tokens == PROMPT_TOKENS + 20
    assert gw.job(job_id)["status"] == "completed"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == ANSWER
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 20
    assert all(chunk.model == "chat-fast" for chunk in chunks)


def test_async_clients_run_concurrently_as_separate_jobs(gw):
    async def run():
        async with gw.async_client() as client:
            return await asyncio.gather(
                *(
                    client.chat.completions.with_raw_response.create(model="chat-fast", messages=_user())
                    for _ in range(5)
                )
            )

    jobs_before, balance_before = gw.books()
    responses = asyncio.run(run())
    job_ids = {response.headers["x-job-id"] for response in responses}
    assert len(job_ids) == 5
    assert all(str(uuid.UUID(job_id)) == job_id for job_id in job_ids)
    assert all(gw.job(job_id)["status"] == "completed" for job_id in job_ids)
    jobs_after, balance_after = gw.books()
    assert jobs_after == jobs_before + 5
    assert balance_after["credits_used"] == balance_before["credits_used"] + 5
