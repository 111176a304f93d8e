"""Per-team rate limits (SPEC §7): requests/min, tokens/min, calls in flight.

The limiter algorithm is tested on both implementations (in-process and the Redis Lua script) with
a controlled clock; the HTTP contract in process; exactness across processes against uvicorn with
two workers sharing Redis (Postgres + Redis only). Redis down → fail open; /health says so.
"""

import asyncio
import logging
import multiprocessing
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import httpx
import pytest
from django.conf import settings

from jobs.models import CallStatus, Job, LLMCall
from tenants import limits
from tests.conftest import make_tenant, needs_postgres_and_redis
from tests.live import free_port

RATE_HEADERS = (
    "x-ratelimit-limit-requests",
    "x-ratelimit-remaining-requests",
    "x-ratelimit-limit-tokens",
    "x-ratelimit-remaining-tokens",
)
HELLO = [{"role": "user", "content": "hello world"}]


@pytest.fixture(autouse=True)
def fresh_limiter(monkeypatch):
    """A new process-wide limiter per test (the in-process one keeps a 60 s memory otherwise)."""
    monkeypatch.setattr(limits, "_limiter", None)


@pytest.fixture
def clock(monkeypatch):
    """The limiter's clock, moved by hand (both implementations read `time.time()` through it)."""
    fake = SimpleNamespace(now=1_700_000_000.0)
    monkeypatch.setattr(limits, "time", SimpleNamespace(time=lambda: fake.now))
    return fake


@pytest.fixture(params=["local", "redis"])
def limiter(request):
    if request.param == "redis":
        if not settings.REDIS_URL:
            pytest.skip("needs REDIS_URL")
        return limits.RedisLimiter(settings.REDIS_URL)
    return limits.LocalLimiter()


def run(coro):
    return asyncio.run(coro)


def new_team_id() -> str:
    return f"rl-{uuid.uuid4().hex[:12]}"


# --- the algorithm, on both limiters ---------------------------------------------------------------


def test_requests_per_minute_is_a_sliding_window(limiter, clock):
    team, rpm3 = new_team_id(), limits.Limits(rpm=3, tpm=None, parallel=None)

    async def scenario():
        out = []
        for i in range(3):
            out.append(limiter.admit(team, rpm3, f"r{i}", 0))
            clock.now += 10
        out.append(limiter.admit(team, rpm3, "r3", 0))  # t=30: 3 in the last minute
        clock.now += 30.5  # t=60.5: the call of t=0 left the window
        out.append(limiter.admit(team, rpm3, "r4", 0))
        out.append(limiter.admit(team, rpm3, "r5", 0))  # t=60.5: t=10, 20, 60.5 still inside
        return out

    results = run(scenario())

    assert [r[:2] for r in results] == [
        (True, ""),
        (True, ""),
        (True, ""),
        (False, "requests"),
        (True, ""),
        (False, "requests"),
    ]
    assert [r[3] for r in results] == [1, 2, 3, 3, 3, 3]
    assert results[3][2] == pytest.approx(30.0, abs=0.01)  # until the oldest call leaves the window
    assert results[5][2] == pytest.approx(9.5, abs=0.01)


def test_tokens_per_minute_counts_estimates_then_actual_usage(limiter, clock):
    team, tpm100 = new_team_id(), limits.Limits(rpm=None, tpm=100, parallel=None)

    async def scenario():
        first = limiter.admit(team, tpm100, "a", 40)
        clock.now += 5
        second = limiter.admit(team, tpm100, "b", 40)
        clock.now += 5
        refused = limiter.admit(team, tpm100, "c", 40)  # 80 + 40 > 100
        await limiter.release(team, "a", 40, 10)  # a actually used 10 tokens
        admitted = limiter.admit(team, tpm100, "c", 40)  # 10 + 40 + 40 = 90
        too_big = limiter.admit(team, tpm100, "d", 101)
        return first, second, refused, admitted, too_big

    first, second, refused, admitted, too_big = run(scenario())

    assert first[:2] == (True, "") and first[4] == 40
    assert second[:2] == (True, "") and second[4] == 80
    assert refused[:2] == (False, "tokens") and refused[4] == 80
    assert refused[2] == pytest.approx(50.0, abs=0.01)  # a's 40 tokens (t=0) leave the window at t=60
    assert admitted[:2] == (True, "") and admitted[4] == 90
    assert too_big[:2] == (False, "tokens") and too_big[2] == pytest.approx(60.0)  # can never fit: a full window


def test_parallel_slots_free_on_release_and_after_their_ttl(limiter, clock):
    team, two = new_team_id(), limits.Limits(rpm=None, tpm=None, parallel=2)

    async def scenario():
        out = [limiter.admit(team, two, token, 0) for token in ("a", "b", "c")]
        await limiter.release(team, "a", 0, 0)
        out.append(limiter.admit(team, two, "c", 0))
        out.append(limiter.admit(team, two, "d", 0))  # b and c in flight
        clock.now += limits.SLOT_TTL_S + 1  # b and c were lost by a killed worker
        out.append(limiter.admit(team, two, "e", 0))
        return out

    results = run(scenario())

    assert [r[:2] for r in results] == [
        (True, ""),
        (True, ""),
        (False, "parallel"),
        (True, ""),
        (False, "parallel"),
        (True, ""),
    ]
    assert results[2][2] == 1.0


def test_a_refused_call_consumes_nothing(limiter, clock):
    team, mixed = new_team_id(), limits.Limits(rpm=None, tpm=100, parallel=1)

    async def scenario():
        first = limiter.admit(team, mixed, "a", 10)
        refused = limiter.admit(team, mixed, "b", 50)  # no slot: its 50 tokens must not count
        await limiter.release(team, "a", 10, 10)
        exact = limiter.admit(team, mixed, "c", 90)  # 10 + 90 = 100 fits exactly
        return first, refused, exact

    first, refused, exact = run(scenario())

    assert first[0] and exact[0]
    assert refused[:2] == (False, "parallel")
    assert exact[4] == 100


def test_a_refusal_reports_current_usage_of_every_dimension(limiter, clock):
    team, both = new_team_id(), limits.Limits(rpm=1, tpm=100, parallel=None)

    async def scenario():
        limiter.admit(team, both, "a", 30)
        return limiter.admit(team, both, "b", 30)

    refused = run(scenario())

    assert refused[:2] == (False, "requests")
    assert (refused[3], refused[4]) == (1, 30)  # the 429's remaining-tokens header is 70, not 100


def test_limits_are_per_team(limiter, clock):
    one = limits.Limits(rpm=1, tpm=None, parallel=None)
    acme, globex = new_team_id(), new_team_id()

    async def scenario():
        return [
            (limiter.admit(acme, one, "a1", 0))[0],
            (limiter.admit(globex, one, "g1", 0))[0],
            (limiter.admit(acme, one, "a2", 0))[0],
        ]

    assert run(scenario()) == [True, True, False]


def test_token_usage_stays_exact_as_calls_leave_the_window(limiter, clock):
    """The Redis limiter keeps a running total beside the window (an admission must not walk a
    whole minute of entries): it must equal the window's sum after releases and expiries."""
    team, tpm = new_team_id(), limits.Limits(rpm=None, tpm=10_000, parallel=None)
    used: dict[str, tuple[float, int]] = {}

    async def scenario():
        for i in range(30):
            token, estimate = f"t{i}", 10 + i
            admitted = limiter.admit(team, tpm, token, estimate)
            assert admitted[0], admitted
            used[token] = (clock.now, estimate)
            if i % 3 == 0:  # some calls finish with their real usage
                await limiter.release(team, token, estimate, i)
                used[token] = (clock.now, i)
            clock.now += 4
        return limiter.admit(team, tpm, "last", 0)  # t=120: the first half has left the window

    last = run(scenario())

    in_window = sum(tokens for at, tokens in used.values() if at > clock.now - limits.WINDOW_S)
    assert last[:2] == (True, "") and last[4] == in_window
    assert 0 < in_window < sum(tokens for _, tokens in used.values())


def test_in_process_limiter_is_exact_under_threads():
    local, rpm60 = limits.LocalLimiter(), limits.Limits(rpm=60, tpm=None, parallel=None)
    barrier, admitted = threading.Barrier(8), []

    def worker(index: int) -> None:
        barrier.wait(timeout=10)
        admitted.extend(local.admit("acme", rpm60, f"{index}-{i}", 0)[0] for i in range(25))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert len(admitted) == 200
    assert admitted.count(True) == 60


def _admit_burst(args: tuple[str, str, int, int]) -> list[bool]:
    url, team, index, count = args

    limiter, rpm60 = limits.RedisLimiter(url), limits.Limits(rpm=60, tpm=None, parallel=None)
    with ThreadPoolExecutor(max_workers=8) as threads:  # concurrent admissions within each process too
        return [
            result[0] for result in threads.map(lambda i: limiter.admit(team, rpm60, f"{index}-{i}", 0), range(count))
        ]


@pytest.mark.skipif(not settings.REDIS_URL, reason="needs REDIS_URL")
def test_redis_limiter_is_exact_across_processes():
    team = new_team_id()
    with multiprocessing.get_context("fork").Pool(4) as pool:
        results = pool.map(_admit_burst, [(settings.REDIS_URL, team, i, 50) for i in range(4)], chunksize=1)

    flat = [admitted for batch in results for admitted in batch]
    assert len(flat) == 200
    assert flat.count(True) == 60


# --- admit(): headers, errors, failing open --------------------------------------------------------


@pytest.fixture
def local_limiter(monkeypatch) -> limits.LocalLimiter:
    local = limits.LocalLimiter()
    monkeypatch.setattr(limits, "_limiter", local)
    return local


def test_admission_headers_name_only_limited_dimensions(local_limiter):
    both = limits.admit(team_id="acme", limits=limits.Limits(rpm=5, tpm=1000, parallel=None), estimated_tokens=30)
    parallel_only = limits.admit(
        team_id="globex", limits=limits.Limits(rpm=None, tpm=None, parallel=3), estimated_tokens=30
    )
    unlimited = limits.admit(team_id="initech", limits=limits.Limits(None, None, None), estimated_tokens=30)

    assert both.headers == {
        "x-ratelimit-limit-requests": "5",
        "x-ratelimit-remaining-requests": "4",
        "x-ratelimit-limit-tokens": "1000",
        "x-ratelimit-remaining-tokens": "970",
    }
    assert parallel_only.headers == {} and parallel_only.recorded
    assert unlimited.headers == {} and not unlimited.recorded
    assert local_limiter._inflight["globex"] and "initech" not in local_limiter._requests


@pytest.mark.parametrize(
    ("configured", "estimated", "detail", "retry_after", "headers"),
    [
        (
            limits.Limits(rpm=1, tpm=None, parallel=None),
            5,
            "Rate limit exceeded: 1 requests per minute",
            "60",
            {"x-ratelimit-limit-requests": "1", "x-ratelimit-remaining-requests": "0"},
        ),
        (
            limits.Limits(rpm=None, tpm=100, parallel=None),
            60,
            "Rate limit exceeded: 100 tokens per minute",
            "60",
            {"x-ratelimit-limit-tokens": "100", "x-ratelimit-remaining-tokens": "40"},
        ),
        (limits.Limits(rpm=None, tpm=None, parallel=1), 5, "Rate limit exceeded: 1 parallel requests", "1", {}),
    ],
)
def test_refusal_is_a_429_with_retry_after(local_limiter, clock, configured, estimated, detail, retry_after, headers):
    limits.admit(team_id="acme", limits=configured, estimated_tokens=estimated)

    with pytest.raises(limits.RateLimited) as refused:
        limits.admit(team_id="acme", limits=configured, estimated_tokens=estimated)

    assert refused.value.status_code == 429
    assert refused.value.payload() == {"detail": detail, "code": "rate_limited"}
    assert refused.value.headers == {**headers, "Retry-After": retry_after}


def test_release_frees_the_slot_and_corrects_tokens(local_limiter):
    configured = limits.Limits(rpm=None, tpm=100, parallel=1)
    admission = limits.admit(team_id="acme", limits=configured, estimated_tokens=90)
    with pytest.raises(limits.RateLimited):
        limits.admit(team_id="acme", limits=configured, estimated_tokens=5)

    run(limits.release(admission, actual_tokens=20))
    second = limits.admit(team_id="acme", limits=configured, estimated_tokens=80)

    assert second.headers["x-ratelimit-remaining-tokens"] == "0"  # 20 actual + 80 estimated


def test_redis_down_fails_open_with_a_logged_error(monkeypatch, caplog):
    monkeypatch.setattr(limits, "_limiter", limits.RedisLimiter(f"redis://127.0.0.1:{free_port()}/0"))
    one = limits.Limits(rpm=1, tpm=None, parallel=1)

    with caplog.at_level(logging.ERROR, logger="tenants.limits"):
        admissions = [limits.admit(team_id="acme", limits=one, estimated_tokens=5) for _ in range(3)]
        run(limits.release(admissions[0], actual_tokens=5))

    assert all(not admission.recorded for admission in admissions)  # admitted, nothing to release
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 3 and all("rate limiter unavailable" in message for message in errors)


# --- over HTTP, in process ---------------------------------------------------------------------------


@pytest.fixture
def limited_team(db, chat_alias):
    def make(**configured):
        return make_tenant("acme-corp", "acme", access_groups=["standard"], default_model="chat-fast", **configured)

    return make


def new_job(tenant) -> str:
    response = tenant.api.post("/api/jobs/create", {"job_type": "rate-test"})
    assert response.status_code == 201, response.content
    return response.json()["job_id"]


@pytest.mark.django_db(transaction=True)
def test_rpm_over_http(limited_team, mock):
    tenant = limited_team(rpm_limit=3)
    job_id = new_job(tenant)

    responses = [tenant.api.post(f"/api/jobs/{job_id}/llm-call", {"messages": HELLO}) for _ in range(4)]

    assert [r.status_code for r in responses] == [200, 200, 200, 429]
    assert [r.headers["x-ratelimit-remaining-requests"] for r in responses] == ["2", "1", "0", "0"]
    assert all(r.headers["x-ratelimit-limit-requests"] == "3" for r in responses)
    assert all("x-ratelimit-limit-tokens" not in r.headers for r in responses)  # tpm unlimited
    refused = responses[3]
    assert refused.json() == {"detail": "Rate limit exceeded: 3 requests per minute", "code": "rate_limited"}
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    # Refused before the provider: no call row, no upstream request.
    assert LLMCall.objects.filter(job_id=job_id).count() == 3
    assert mock.stats()["requests"] == 3


@pytest.mark.django_db(transaction=True)
def test_tpm_over_http_admits_the_estimate_and_corrects_to_actual_usage(limited_team, mock):
    tenant = limited_team(tpm_limit=1000)
    job_id = new_job(tenant)
    call = {"messages": HELLO, "max_tokens": 400}

    first = tenant.api.post(f"/api/jobs/{job_id}/llm-call", call)
    second = tenant.api.post(f"/api/jobs/{job_id}/llm-call", call)
    third = tenant.api.post(f"/api/jobs/{job_id}/llm-call", {**call, "max_tokens": 980})

    assert (first.status_code, second.status_code) == (200, 200)
    assert "x-ratelimit-limit-requests" not in first.headers  # rpm unlimited
    estimate = 1000 - int(first.headers["x-ratelimit-remaining-tokens"])
    assert 400 < estimate < 450  # the prompt estimate + max_tokens
    used_by_first = first.json()["usage"]["total_tokens"]  # the mock answers 20 tokens, not 400
    assert int(second.headers["x-ratelimit-remaining-tokens"]) == 1000 - used_by_first - estimate
    assert third.status_code == 429
    assert third.json() == {"detail": "Rate limit exceeded: 1000 tokens per minute", "code": "rate_limited"}
    assert third.headers["x-ratelimit-limit-tokens"] == "1000"
    used_by_second = second.json()["usage"]["total_tokens"]
    assert int(third.headers["x-ratelimit-remaining-tokens"]) == 1000 - used_by_first - used_by_second
    assert LLMCall.objects.filter(job_id=job_id, status=CallStatus.SUCCESS).count() == 2


@pytest.mark.django_db(transaction=True)
def test_unlimited_team_gets_no_rate_headers(limited_team, mock):
    tenant = limited_team()
    job_id = new_job(tenant)

    response = tenant.api.post(f"/api/jobs/{job_id}/llm-call", {"messages": HELLO})

    assert response.status_code == 200
    assert not [name for name in RATE_HEADERS if name in response.headers]


@pytest.mark.django_db(transaction=True)
def test_streaming_is_limited_before_the_first_byte_and_releases_its_slot(limited_team, mock, sse_post):
    tenant = limited_team(rpm_limit=3, max_parallel_requests=1)
    job_id = new_job(tenant)
    path = f"/api/jobs/{job_id}/llm-call-stream"

    streams = [sse_post(tenant.key, path, {"messages": HELLO}) for _ in range(3)]  # one at a time: slot freed
    refused, body = sse_post(tenant.key, path, {"messages": HELLO})

    assert [response.status_code for response, _ in streams] == [200, 200, 200]
    assert [response.headers["x-ratelimit-remaining-requests"] for response, _ in streams] == ["2", "1", "0"]
    assert all(body.endswith(b"data: [DONE]\n\n") for _, body in streams)
    assert refused.status_code == 429
    assert refused.headers["content-type"] == "application/json"
    assert refused.json() == {"detail": "Rate limit exceeded: 3 requests per minute", "code": "rate_limited"}
    assert LLMCall.objects.filter(job_id=job_id, stream=True).count() == 3


@pytest.mark.django_db(transaction=True)
def test_llm_calls_fail_open_when_redis_is_down(limited_team, mock, monkeypatch):
    monkeypatch.setattr(limits, "_limiter", limits.RedisLimiter(f"redis://127.0.0.1:{free_port()}/0"))
    tenant = limited_team(rpm_limit=1, max_parallel_requests=1)
    job_id = new_job(tenant)

    responses = [tenant.api.post(f"/api/jobs/{job_id}/llm-call", {"messages": HELLO}) for _ in range(3)]

    assert [r.status_code for r in responses] == [200, 200, 200]  # availability first
    assert LLMCall.objects.filter(job_id=job_id, status=CallStatus.SUCCESS).count() == 3


@pytest.mark.django_db
def test_health_reports_a_broken_cache(anon, settings):
    settings.CACHES = {
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": f"redis://127.0.0.1:{free_port()}/0",  # nothing listens there
            "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 0.5, "SOCKET_TIMEOUT": 0.5},
        }
    }

    response = anon.get("/health")

    assert response.status_code == 503
    assert response.json()["status"] == "unhealthy"
    assert response.json()["checks"] == {"database": "ok", "cache": "error"}


@pytest.mark.django_db
def test_health_reports_a_cache_that_loses_writes(anon, monkeypatch):
    from django.core.cache import caches

    # The class: /health checks on its own threads, each with its own backend instance.
    monkeypatch.setattr(type(caches["default"]), "get", lambda *args, **kwargs: None)

    response = anon.get("/health")

    assert response.status_code == 503
    assert response.json()["checks"]["cache"] == "error"


# --- across processes: uvicorn --workers 2 sharing Redis ------------------------------------------


def fire(base_url: str, key: str, path: str, bodies: list[dict]) -> list[httpx.Response]:
    """POST all bodies at once (one connection each) and return the responses in order."""

    async def go():
        async with httpx.AsyncClient(
            base_url=base_url,
            timeout=60,
            trust_env=False,
            limits=httpx.Limits(max_connections=len(bodies), max_keepalive_connections=0),
            headers={"Authorization": f"Bearer {key}"},
        ) as client:
            return await asyncio.gather(*[client.post(path, json=body) for body in bodies])

    return asyncio.run(go())


def unexpected(responses: list[httpx.Response]) -> list[tuple[int, str]]:
    return [(r.status_code, r.text[:300]) for r in responses if r.status_code not in (200, 429)]


def redis_count(team_id: str, suffix: str) -> int:
    import redis

    client = redis.Redis.from_url(settings.REDIS_URL)
    try:
        return client.zcard(f"saas_llm:rl:{{{team_id}}}:{suffix}")
    finally:
        client.close()


@pytest.mark.live
@pytest.mark.django_db(transaction=True, reset_sequences=True)
@needs_postgres_and_redis()
def test_rpm_exact_across_processes(limited_team, mock, live_gateway):
    tenant = limited_team(rpm_limit=60)
    job_id = new_job(tenant)

    responses = fire(live_gateway.url, tenant.key, f"/api/jobs/{job_id}/llm-call", [{"messages": HELLO}] * 200)

    statuses = [r.status_code for r in responses]
    assert statuses.count(200) == 60 and statuses.count(429) == 140, unexpected(responses)
    admitted = [r for r in responses if r.status_code == 200]
    refused = [r for r in responses if r.status_code == 429]
    # One atomic counter for both processes: every admitted call saw a distinct remaining count.
    assert sorted(int(r.headers["x-ratelimit-remaining-requests"]) for r in admitted) == list(range(60))
    assert all(r.headers["x-ratelimit-limit-requests"] == "60" for r in responses)
    assert all("x-ratelimit-limit-tokens" not in r.headers for r in responses)
    for response in refused:
        assert response.json() == {"detail": "Rate limit exceeded: 60 requests per minute", "code": "rate_limited"}
        assert response.headers["x-ratelimit-remaining-requests"] == "0"
        # Until the oldest admission leaves the window; each process stamps with its own clock (+1 s).
        assert 1 <= int(response.headers["Retry-After"]) <= 61
    assert LLMCall.objects.filter(job_id=job_id, status=CallStatus.SUCCESS).count() == 60
    assert mock.stats()["requests"] == 60
    assert Job.objects.get(id=job_id).total_calls == 60
    assert redis_count(tenant.team.id, "req") == 60


@pytest.mark.live
@pytest.mark.django_db(transaction=True, reset_sequences=True)
@needs_postgres_and_redis()
def test_tpm_exact_across_processes(limited_team, mock, live_gateway):
    # Each call estimates (prompt + 1000) tokens; 10 × (prompt + 1000) fit, 11 never do.
    tenant = limited_team(tpm_limit=10_500)
    job_id = new_job(tenant)
    # The mock holds every admitted call for 4 s, so no call's actual usage frees tokens early.
    body = {"messages": [{"role": "user", "content": "hello [[mock:latency=4000]]"}], "max_tokens": 1000}

    started = time.monotonic()
    responses = fire(live_gateway.url, tenant.key, f"/api/jobs/{job_id}/llm-call", [body] * 40)

    statuses = [r.status_code for r in responses]
    assert statuses.count(200) == 10 and statuses.count(429) == 30, unexpected(responses)
    remaining = sorted(int(r.headers["x-ratelimit-remaining-tokens"]) for r in responses if r.status_code == 200)
    estimate = 10_500 - remaining[-1]
    assert 1000 < estimate < 1050
    assert remaining == [10_500 - k * estimate for k in range(10, 0, -1)]
    for response in responses:
        assert "x-ratelimit-limit-requests" not in response.headers
        if response.status_code == 429:
            assert response.json() == {"detail": "Rate limit exceeded: 10500 tokens per minute", "code": "rate_limited"}
            assert int(response.headers["Retry-After"]) >= 1
    assert time.monotonic() - started < 30
    assert LLMCall.objects.filter(job_id=job_id).count() == 10
    assert mock.stats()["requests"] == 10


@pytest.mark.live
@pytest.mark.django_db(transaction=True, reset_sequences=True)
@needs_postgres_and_redis()
def test_parallel_exact_across_processes(limited_team, mock, live_gateway):
    tenant = limited_team(max_parallel_requests=5)
    job_id = new_job(tenant)
    # Each admitted call holds its slot for 3 s: every other request arrives while 5 are in flight.
    slow = {"messages": [{"role": "user", "content": "hello [[mock:latency=3000]]"}]}

    responses = fire(live_gateway.url, tenant.key, f"/api/jobs/{job_id}/llm-call", [slow] * 30)
    after = fire(live_gateway.url, tenant.key, f"/api/jobs/{job_id}/llm-call", [{"messages": HELLO}] * 5)

    statuses = [r.status_code for r in responses]
    assert statuses.count(200) == 5 and statuses.count(429) == 25, unexpected(responses)
    for response in responses:
        assert not [name for name in RATE_HEADERS if name in response.headers]  # rpm and tpm unlimited
        if response.status_code == 429:
            assert response.json() == {"detail": "Rate limit exceeded: 5 parallel requests", "code": "rate_limited"}
            assert response.headers["Retry-After"] == "1"
    # Finished calls gave their slots back.
    assert [r.status_code for r in after] == [200] * 5
    assert redis_count(tenant.team.id, "inflight") == 0
    assert LLMCall.objects.filter(job_id=job_id, status=CallStatus.SUCCESS).count() == 10
