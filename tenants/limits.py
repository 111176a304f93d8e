"""Per-team rate limits (SPEC §7): requests/min, tokens/min (sliding windows) and calls in flight.

With Redis, one Lua script checks and records all three dimensions atomically, so the limits
hold across every worker process. Without Redis the same algorithm runs in-process (per process).
If Redis fails, admission fails open and logs an error (availability first).
"""

import asyncio
import logging
import math
import threading
import time
import uuid
from dataclasses import dataclass, field

from django.conf import settings

from saas_llm.errors import ApiError

logger = logging.getLogger(__name__)

WINDOW_S = 60.0
# An in-flight slot whose release was lost (killed worker) frees itself after this long.
SLOT_TTL_S = 900.0
# Redis down (connection refused) fails open at once; a hung Redis after this long.
REDIS_TIMEOUT_S = 2.0
REDIS_CONNECT_TIMEOUT_S = 5.0
REDIS_POOL_SIZE = 8


@dataclass(frozen=True)
class Limits:
    rpm: int | None
    tpm: int | None
    parallel: int | None

    @property
    def unlimited(self) -> bool:
        return self.rpm is None and self.tpm is None and self.parallel is None


@dataclass
class Admission:
    """A granted admission: headers for the response, and what to release or correct afterwards."""

    team_id: str
    token: str
    limits: Limits
    estimated_tokens: int
    remaining_requests: int | None = None
    remaining_tokens: int | None = None
    recorded: bool = True
    headers: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.limits.rpm is not None:
            self.headers["x-ratelimit-limit-requests"] = str(self.limits.rpm)
            self.headers["x-ratelimit-remaining-requests"] = str(max(self.remaining_requests or 0, 0))
        if self.limits.tpm is not None:
            self.headers["x-ratelimit-limit-tokens"] = str(self.limits.tpm)
            self.headers["x-ratelimit-remaining-tokens"] = str(max(self.remaining_tokens or 0, 0))


class RateLimited(ApiError):
    status_code = 429
    code = "rate_limited"


# KEYS: requests zset, tokens zset, inflight zset, tokens total. ARGV: now, window, rpm, tpm, parallel,
# token, est, slot_ttl. A limit of -1 means unlimited. Token entries are "<token>:<tokens>" members
# scored by time; the total of their tokens is kept beside them, so an admission costs O(entries
# leaving the window), not O(window): at 60 calls/s a minute holds 3 600 entries.
LUA_ADMIT = """
local now = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local rpm = tonumber(ARGV[3])
local tpm = tonumber(ARGV[4])
local parallel = tonumber(ARGV[5])
local token = ARGV[6]
local est = tonumber(ARGV[7])
local slot_ttl = tonumber(ARGV[8])
local used_req, used_tok, retry = 0, 0, 0
-- Token usage first: a refusal on any dimension reports it (x-ratelimit-remaining-tokens).
if tpm >= 0 then
  local leaving = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now - window)
  if #leaving > 0 then
    local freed = 0
    for i = 1, #leaving do
      freed = freed + (tonumber(string.match(leaving[i], ':(%d+)$')) or 0)
    end
    redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - window)
    redis.call('DECRBY', KEYS[4], freed)
  end
  used_tok = tonumber(redis.call('GET', KEYS[4]) or '0')
  if used_tok ~= 0 and redis.call('ZCARD', KEYS[2]) == 0 then  -- the window emptied: nothing is in use
    used_tok = 0
    redis.call('DEL', KEYS[4])
  end
end
if rpm >= 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
  used_req = redis.call('ZCARD', KEYS[1])
  if used_req + 1 > rpm then
    local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
    retry = (tonumber(oldest[2]) or now) + window - now
    return {0, 'requests', tostring(retry), used_req, used_tok}
  end
end
if tpm >= 0 then
  if used_tok + est > tpm then
    -- Refused: when will enough tokens have left the window? (walks the window, on refusals only)
    local entries = redis.call('ZRANGE', KEYS[2], 0, -1, 'WITHSCORES')
    local excess, freed_at = used_tok + est - tpm, now
    for i = 1, #entries, 2 do
      excess = excess - (tonumber(string.match(entries[i], ':(%d+)$')) or 0)
      freed_at = tonumber(entries[i + 1])
      if excess <= 0 then break end
    end
    retry = freed_at + window - now
    if est > tpm then retry = window end
    return {0, 'tokens', tostring(retry), used_req, used_tok}
  end
end
if parallel >= 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now - slot_ttl)
  if redis.call('ZCARD', KEYS[3]) + 1 > parallel then
    return {0, 'parallel', '1', used_req, used_tok}
  end
end
if rpm >= 0 then
  redis.call('ZADD', KEYS[1], now, token)
  redis.call('EXPIRE', KEYS[1], math.ceil(window) + 1)
end
if tpm >= 0 then
  redis.call('ZADD', KEYS[2], now, token .. ':' .. est)
  redis.call('INCRBY', KEYS[4], est)
  redis.call('EXPIRE', KEYS[2], math.ceil(window) + 1)
  redis.call('EXPIRE', KEYS[4], math.ceil(window) + 1)
end
if parallel >= 0 then
  redis.call('ZADD', KEYS[3], now, token)
  redis.call('EXPIRE', KEYS[3], math.ceil(slot_ttl))
end
return {1, '', '0', used_req + 1, used_tok + est}
"""

# KEYS: tokens zset, inflight zset, tokens total. ARGV: token, estimated, actual
LUA_RELEASE = """
redis.call('ZREM', KEYS[2], ARGV[1])
local member = ARGV[1] .. ':' .. ARGV[2]
local score = redis.call('ZSCORE', KEYS[1], member)
if score then
  redis.call('ZREM', KEYS[1], member)
  redis.call('ZADD', KEYS[1], score, ARGV[1] .. ':' .. ARGV[3])
  redis.call('INCRBY', KEYS[3], tonumber(ARGV[3]) - tonumber(ARGV[2]))
end
return 1
"""


def _keys(team_id: str) -> list[str]:
    base = f"saas_llm:rl:{{{team_id}}}"  # one hash slot per team (Redis Cluster friendly)
    return [f"{base}:req", f"{base}:tok", f"{base}:inflight", f"{base}:toksum"]


def _arg(limit: int | None) -> int:
    return -1 if limit is None else limit


class RedisLimiter:
    POOL_OPTIONS = {
        "max_connections": REDIS_POOL_SIZE,
        "timeout": None,
        "socket_timeout": REDIS_TIMEOUT_S,
        # A refused connection fails at once; this only bounds a Redis that accepts and hangs.
        "socket_connect_timeout": REDIS_CONNECT_TIMEOUT_S,
    }

    def __init__(self, url: str):
        self.url = url
        self._clients: dict[int, object] = {}
        self._sync = None

    def _client(self):
        """The async client of the running loop (releases run on the event loop)."""
        import redis.asyncio as aioredis

        loop_id = id(asyncio.get_running_loop())
        client = self._clients.get(loop_id)
        if client is None:
            # A small bounded pool: each release is one short script, so a few connections serve any
            # burst. One new connection per concurrent call (the default pool) timed out connecting
            # under load and failed open exactly when the limit mattered. Waiting for a pooled
            # connection is not "Redis is down", so it has no timeout; the socket timeouts detect that.
            pool = aioredis.BlockingConnectionPool.from_url(self.url, **self.POOL_OPTIONS)
            client = aioredis.Redis(connection_pool=pool)
            client.release_script = client.register_script(LUA_RELEASE)
            self._clients[loop_id] = client
        return client

    def _sync_client(self):
        """The thread-safe client admissions use: they run in the database step's worker thread,
        between reading the team and writing the job, so a refusal leaves nothing behind."""
        if self._sync is None:
            import redis

            client = redis.Redis(connection_pool=redis.BlockingConnectionPool.from_url(self.url, **self.POOL_OPTIONS))
            client.admit_script = client.register_script(LUA_ADMIT)
            self._sync = client
        return self._sync

    def admit(self, team_id: str, limits: Limits, token: str, estimated: int) -> tuple:
        result = self._sync_client().admit_script(
            keys=_keys(team_id),
            args=[
                f"{time.time():.6f}",
                WINDOW_S,
                _arg(limits.rpm),
                _arg(limits.tpm),
                _arg(limits.parallel),
                token,
                estimated,
                SLOT_TTL_S,
            ],
        )
        admitted, dimension, retry, used_req, used_tok = result
        return (
            bool(admitted),
            (dimension.decode() if isinstance(dimension, bytes) else dimension),
            float(retry),
            int(used_req),
            int(used_tok),
        )

    async def release(self, team_id: str, token: str, estimated: int, actual: int) -> None:
        keys = _keys(team_id)
        await self._client().release_script(keys=[keys[1], keys[2], keys[3]], args=[token, estimated, actual])


class LocalLimiter:
    """The same algorithm in process memory (the embedded default: limits are per process)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: dict[str, list[tuple[float, str]]] = {}
        self._tokens: dict[str, dict[str, tuple[float, int]]] = {}
        self._inflight: dict[str, dict[str, float]] = {}

    def admit(self, team_id: str, limits: Limits, token: str, estimated: int) -> tuple:
        now = time.time()
        with self._lock:
            requests = [entry for entry in self._requests.get(team_id, []) if entry[0] > now - WINDOW_S]
            tokens = {k: v for k, v in self._tokens.get(team_id, {}).items() if v[0] > now - WINDOW_S}
            inflight = {k: v for k, v in self._inflight.get(team_id, {}).items() if v > now - SLOT_TTL_S}
            self._requests[team_id], self._tokens[team_id], self._inflight[team_id] = requests, tokens, inflight
            used_tok = sum(n for _, n in tokens.values())
            if limits.rpm is not None and len(requests) + 1 > limits.rpm:
                return False, "requests", requests[0][0] + WINDOW_S - now, len(requests), used_tok
            if limits.tpm is not None and used_tok + estimated > limits.tpm:
                excess, freed_at = used_tok + estimated - limits.tpm, now
                for at, n in sorted(tokens.values()):
                    excess -= n
                    freed_at = at
                    if excess <= 0:
                        break
                retry = WINDOW_S if estimated > limits.tpm else freed_at + WINDOW_S - now
                return False, "tokens", retry, len(requests), used_tok
            if limits.parallel is not None and len(inflight) + 1 > limits.parallel:
                return False, "parallel", 1.0, len(requests), used_tok
            if limits.rpm is not None:
                requests.append((now, token))
            if limits.tpm is not None:
                tokens[token] = (now, estimated)
            if limits.parallel is not None:
                inflight[token] = now
            return True, "", 0.0, len(requests), used_tok + estimated

    async def release(self, team_id: str, token: str, estimated: int, actual: int) -> None:
        with self._lock:
            self._inflight.get(team_id, {}).pop(token, None)
            tokens = self._tokens.get(team_id, {})
            if token in tokens:
                tokens[token] = (tokens[token][0], actual)


_limiter: RedisLimiter | LocalLimiter | None = None


def limiter() -> RedisLimiter | LocalLimiter:
    global _limiter
    if _limiter is None:
        _limiter = RedisLimiter(settings.REDIS_URL) if settings.REDIS_URL else LocalLimiter()
    return _limiter


DIMENSION_TEXT = {"requests": "requests per minute", "tokens": "tokens per minute", "parallel": "parallel requests"}


def admit(*, team_id: str, limits: Limits, estimated_tokens: int) -> Admission:
    """Admit one LLM call or raise RateLimited (429 with Retry-After and x-ratelimit-* headers).

    Sync: it runs inside the admission's database step (jobs/gateway.py); the release is async."""
    token = uuid.uuid4().hex
    if limits.unlimited:
        return Admission(team_id, token, limits, estimated_tokens, recorded=False)
    try:
        admitted, dimension, retry, used_req, used_tok = limiter().admit(team_id, limits, token, estimated_tokens)
    except Exception as exc:  # Redis down or slow: fail open (SPEC §7), loudly
        logger.error("rate limiter unavailable, admitting without limits: %s", exc)
        return Admission(team_id, token, limits, estimated_tokens, recorded=False)
    remaining_req = limits.rpm - used_req if limits.rpm is not None else None
    remaining_tok = limits.tpm - used_tok if limits.tpm is not None else None
    if not admitted:
        limit_value = {"requests": limits.rpm, "tokens": limits.tpm, "parallel": limits.parallel}[dimension]
        headers = Admission(
            team_id, token, limits, estimated_tokens, remaining_req, remaining_tok, recorded=False
        ).headers
        headers["Retry-After"] = str(max(1, math.ceil(retry)))
        raise RateLimited(f"Rate limit exceeded: {limit_value} {DIMENSION_TEXT[dimension]}", headers=headers)
    return Admission(team_id, token, limits, estimated_tokens, remaining_req, remaining_tok)


async def release(admission: Admission, *, actual_tokens: int | None) -> None:
    """Free the in-flight slot and replace the token estimate by the actual usage."""
    if not admission.recorded:
        return
    actual = admission.estimated_tokens if actual_tokens is None else actual_tokens
    try:
        await limiter().release(admission.team_id, admission.token, admission.estimated_tokens, actual)
    except Exception as exc:
        logger.error("rate limiter release failed (slot frees itself after %ss): %s", SLOT_TTL_S, exc)
