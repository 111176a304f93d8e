"""Typed async Python client for the saas-llm gateway (team-facing API, SPEC §3–§5.7).

    from examples.typed_client import SaaSLLMClient

    async with SaaSLLMClient(base_url="http://localhost:8003", team_id="acme-corp", virtual_key="sk-…") as client:
        job_id = await client.create_job("test")
        result = await client.chat(job_id, [{"role": "user", "content": "Hello"}])
        print(result.content, result.usage.total_tokens, result.cost_usd)

        stream = client.chat_stream(job_id, "Tell me a story")
        async for chunk in stream:
            print(chunk.content, end="", flush=True)
        print(stream.usage, stream.cost_usd, stream.call_id)   # set by the final chunk

        completion = await client.complete_job(job_id)
        print(completion.credits_charged, completion.credits_remaining)

What the client does for you
* Typed responses (pydantic v2). Money and credits are `Decimal`, parsed from the JSON text exactly.
* Typed errors: `SaaSLLMError` → `AuthenticationError` (401), `PermissionDeniedError` (403; subclasses
  `InsufficientCreditsError` and `TeamSuspendedError`), `NotFoundError` (404), `ConflictError` (409),
  `ValidationError` (400/422), `RateLimitError` (429, `.retry_after`), `ServerError` (5xx),
  `APIConnectionError` / `APITimeoutError` (no HTTP answer), `StreamError` (error event mid-stream).
* Retries with exponential backoff and jitter on 429/502/503/504, on a 409 `idempotency_in_progress`
  and on connection errors, honouring `Retry-After` (a `Retry-After` longer than `max_retry_wait` is
  not waited for: the `RateLimitError` is raised at once so the caller can decide).
* Every POST carries an `Idempotency-Key` (uuid4, or yours) that is reused by its retries, so a retry
  after a dropped connection replays the first answer instead of creating a second job, making a
  second LLM call or charging twice. The streaming endpoint refuses the header, so a stream is only
  retried when the server certainly never saw it (connection refused) or refused it before the first
  byte (429/502/503/504).

`SyncSaaSLLMClient` is a blocking twin with the same methods (not usable inside a running event loop).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import email.utils
import functools
import hashlib
import hmac
import json
import logging
import random
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from datetime import date, datetime
from decimal import Decimal
from typing import Any, Concatenate, Generic, Literal, ParamSpec, TypedDict, TypeVar

import httpx
from pydantic import BaseModel, ConfigDict, Field
from typing_extensions import Unpack

__all__ = [
    "SaaSLLMClient",
    "SyncSaaSLLMClient",
    "ChatStream",
    "SyncChatStream",
    "JobRun",
    # models
    "Job",
    "JobList",
    "JobCompletion",
    "JobCosts",
    "CostsSummary",
    "CallSummary",
    "CostLine",
    "ChatMessage",
    "ChatParams",
    "ChatResult",
    "AssistantMessage",
    "ToolCall",
    "Usage",
    "ChatChunk",
    "ChunkChoice",
    "ChunkDelta",
    "RateLimitInfo",
    "Balance",
    "Transaction",
    "TransactionList",
    "UsageStats",
    "UsageRow",
    "TeamUsage",
    "Webhook",
    "WebhookCreated",
    "WebhookList",
    "WebhookDelivery",
    "WebhookDeliveryList",
    "ModelAlias",
    "ModelAliasList",
    "Team",
    "TeamKey",
    "Page",
    # errors
    "SaaSLLMError",
    "APIConnectionError",
    "APITimeoutError",
    "AuthenticationError",
    "PermissionDeniedError",
    "InsufficientCreditsError",
    "TeamSuspendedError",
    "NotFoundError",
    "ConflictError",
    "ValidationError",
    "RateLimitError",
    "ServerError",
    "StreamError",
    # helpers
    "verify_webhook",
    "WebhookVerificationError",
]

logger = logging.getLogger("saas_llm.client")

USER_AGENT = "saas-llm-python/0.1"
RETRY_STATUSES = frozenset({429, 502, 503, 504})

JobStatus = Literal["pending", "in_progress", "completed", "failed", "cancelled"]
FinalStatus = Literal["completed", "failed", "cancelled"]
SortBy = Literal["created_at", "completed_at", "cost_usd", "total_tokens"]
Order = Literal["asc", "desc"]
GroupBy = Literal["day", "job_type", "model"]
TransactionKind = Literal["grant", "purchase", "charge", "refund", "adjustment"]
WebhookEvent = Literal["job.completed", "job.failed", "job.cancelled", "credits.low_balance"]
DateLike = date | datetime | str


# =================================================================================================
# Errors
# =================================================================================================


class SaaSLLMError(Exception):
    """Any failure talking to the gateway. `status` is None when no HTTP answer was received."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        detail: Any = None,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
        request_id: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.detail = detail if detail is not None else message
        self.body = body
        self.headers: dict[str, str] = dict(headers or {})
        self.request_id = request_id
        self.retry_after = retry_after

    @property
    def status_code(self) -> int | None:  # alias, as in httpx/openai
        return self.status

    def __repr__(self) -> str:
        return f"{type(self).__name__}(status={self.status!r}, code={self.code!r}, detail={self.detail!r})"


class APIConnectionError(SaaSLLMError):
    """No (complete) HTTP answer: connection refused or dropped, after the retries."""


class APITimeoutError(APIConnectionError):
    """The request timed out, after the retries."""


class AuthenticationError(SaaSLLMError):
    """401: missing, malformed, unknown, expired or revoked key."""


class PermissionDeniedError(SaaSLLMError):
    """403: wrong team, admin key required, model not allowed, team suspended, insufficient credits."""


class InsufficientCreditsError(PermissionDeniedError):
    """403 `insufficient_credits`: the team cannot cover the job's reservation (or usage-mode call)."""


class TeamSuspendedError(PermissionDeniedError):
    """403 `team_suspended`: no new jobs or LLM calls; reads and completions keep working."""


class NotFoundError(SaaSLLMError):
    """404: unknown route, job, webhook (or another team's), `model_not_found`."""


class ConflictError(SaaSLLMError):
    """409: `job_already_finished`, `idempotency_in_progress`, or an existing resource."""


class ValidationError(SaaSLLMError):
    """400 (malformed request, provider rejected parameters) or 422 (validation). `errors` lists
    the 422 items `{"loc", "msg", "type"}` (empty for a plain-detail error)."""

    @property
    def errors(self) -> list[dict[str, Any]]:
        return list(self.detail) if isinstance(self.detail, list) else []


class RateLimitError(SaaSLLMError):
    """429: the team's rpm/tpm/parallel limit, or the provider's. `retry_after` is in seconds."""


class ServerError(SaaSLLMError):
    """5xx: 500 internal error, 502 bad provider response, 503 unavailable, 504 provider timeout."""


class StreamError(SaaSLLMError):
    """An error event (`data: {"error": {...}}`) after the stream started; `code` is the server's."""


def _parse_retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _error_class(status: int, code: str | None) -> type[SaaSLLMError]:
    if status == 401:
        return AuthenticationError
    if status == 403:
        return {"insufficient_credits": InsufficientCreditsError, "team_suspended": TeamSuspendedError}.get(
            code or "", PermissionDeniedError
        )
    if status == 404:
        return NotFoundError
    if status == 409:
        return ConflictError
    if status in (400, 422):
        return ValidationError
    if status == 429:
        return RateLimitError
    if status >= 500:
        return ServerError
    return SaaSLLMError


def error_from_response(response: httpx.Response) -> SaaSLLMError:
    """Build the typed error for a (read) error response: `{"detail", "code"?}` or OpenAI's `{"error"}`."""
    try:
        body: Any = response.json()
    except ValueError:
        body = response.text
    detail: Any = None
    code: str | None = None
    if isinstance(body, dict):
        if "detail" in body:
            detail, code = body["detail"], body.get("code")
        elif isinstance(body.get("error"), dict):
            detail, code = body["error"].get("message"), body["error"].get("code")
    if detail is None:
        detail = body if isinstance(body, str) and body else response.reason_phrase
    if isinstance(detail, list):
        parts = [
            f"{'.'.join(str(p) for p in item.get('loc', []))}: {item.get('msg')}"
            if isinstance(item, dict)
            else str(item)
            for item in detail
        ]
        text = "; ".join(parts)
    else:
        text = str(detail)
    status = response.status_code
    retry_after = _parse_retry_after(response.headers.get("Retry-After"))
    message = f"{status} {code}: {text}" if code else f"{status}: {text}"
    return _error_class(status, code)(
        message,
        status=status,
        code=code,
        detail=detail,
        body=body,
        headers=response.headers,
        request_id=response.headers.get("X-Request-Id"),
        retry_after=retry_after,
    )


# =================================================================================================
# Models
# =================================================================================================


class _Model(BaseModel):
    """Response model: unknown (newer) fields are kept, and `obj["field"]` works like `obj.field`."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    def __getitem__(self, key: str) -> Any:
        try:
            return getattr(self, key)
        except AttributeError:
            raise KeyError(key) from None


T = TypeVar("T")


class Page(_Model, Generic[T]):
    count: int
    next: str | None = None
    previous: str | None = None
    results: list[T]


class RateLimitInfo(_Model):
    """The `x-ratelimit-*` headers of an LLM call (None for an unlimited dimension)."""

    limit_requests: int | None = None
    remaining_requests: int | None = None
    limit_tokens: int | None = None
    remaining_tokens: int | None = None

    @classmethod
    def from_headers(cls, headers: Mapping[str, str]) -> RateLimitInfo | None:
        def read(name: str) -> int | None:
            value = headers.get(name)
            try:
                return int(value) if value is not None else None
            except ValueError:
                return None

        info = cls(
            limit_requests=read("x-ratelimit-limit-requests"),
            remaining_requests=read("x-ratelimit-remaining-requests"),
            limit_tokens=read("x-ratelimit-limit-tokens"),
            remaining_tokens=read("x-ratelimit-remaining-tokens"),
        )
        return info if any(v is not None for v in info.model_dump().values()) else None


# --- jobs -----------------------------------------------------------------------------------------


class Job(_Model):
    """A job. The create response carries only the first eight fields; the rest then have the values
    of a fresh job (no calls, nothing charged)."""

    job_id: str
    team_id: str
    job_type: str
    status: str  # JobStatus
    created_at: datetime
    metadata: dict[str, Any] = Field(default_factory=dict)
    user_id: str | None = None
    external_id: str | None = None
    started_at: datetime | None = None
    completed_at: datetime | None = None
    error_message: str | None = None
    total_calls: int = 0
    successful_calls: int = 0
    failed_calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    cost_usd: Decimal = Decimal(0)
    credits_charged: Decimal = Decimal(0)
    models_used: list[str] = Field(default_factory=list)


JobList = Page[Job]


class CostsSummary(_Model):
    total_calls: int
    successful_calls: int
    failed_calls: int
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    cost_usd: Decimal
    avg_latency_ms: float


class CallSummary(_Model):
    call_id: str
    model: str
    purpose: str | None = None
    total_tokens: int
    cost_usd: Decimal
    latency_ms: int
    status: str  # success | error | cancelled
    error: str | None = None


class JobCompletion(_Model):
    job_id: str
    status: str
    completed_at: datetime | None = None
    costs: CostsSummary
    credits_charged: Decimal
    credits_remaining: Decimal
    calls: list[CallSummary] = Field(default_factory=list)


class CostLine(_Model):
    call_id: str
    model: str
    resolved_model: str | None = None  # admin keys or teams with expose_models
    purpose: str | None = None
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    cost_usd: Decimal
    provider_cost_usd: Decimal | None = None  # admin keys only
    margin_usd: Decimal | None = None  # admin keys only
    unpriced: bool = False
    latency_ms: int
    status: str
    created_at: datetime


class JobCosts(_Model):
    job_id: str
    team_id: str
    job_type: str
    status: str
    total_cost_usd: Decimal
    provider_cost_usd: Decimal | None = None  # admin keys only
    margin_usd: Decimal | None = None  # admin keys only
    credits_charged: Decimal
    breakdown: list[CostLine] = Field(default_factory=list)


# --- LLM calls ------------------------------------------------------------------------------------


class ChatMessage(BaseModel):
    """A request message; plain dicts with the same keys are accepted too."""

    model_config = ConfigDict(extra="forbid")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None


class ChatParams(TypedDict, total=False):
    """Provider parameters; only those you pass are forwarded (no forced defaults)."""

    temperature: float
    max_tokens: int
    top_p: float
    stop: str | list[str]
    presence_penalty: float
    frequency_penalty: float
    seed: int
    response_format: dict[str, Any]
    tools: list[dict[str, Any]]
    tool_choice: str | dict[str, Any]
    metadata: dict[str, Any]


class ToolCall(_Model):
    id: str
    type: str = "function"
    function: dict[str, Any]


class AssistantMessage(_Model):
    role: str = "assistant"
    content: str | None = None
    finish_reason: str | None = None  # stop | length | tool_calls | content_filter
    tool_calls: list[ToolCall] | None = None


class Usage(_Model):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ChatResult(_Model):
    call_id: str
    job_id: str
    model: str  # the alias you asked for
    resolved_model: str | None = None  # only for teams with expose_models
    response: AssistantMessage
    usage: Usage
    cost_usd: Decimal
    latency_ms: int
    # From the response headers (not part of the JSON body).
    rate_limit: RateLimitInfo | None = Field(default=None, exclude=True)
    request_id: str | None = Field(default=None, exclude=True)

    @property
    def content(self) -> str | None:
        return self.response.content

    @property
    def finish_reason(self) -> str | None:
        return self.response.finish_reason


class ChunkDelta(_Model):
    role: str | None = None
    content: str | None = None
    tool_calls: list[dict[str, Any]] | None = None


class ChunkChoice(_Model):
    index: int = 0
    delta: ChunkDelta = Field(default_factory=ChunkDelta)
    finish_reason: str | None = None


class ChatChunk(_Model):
    """An OpenAI `chat.completion.chunk`. The final one has no choices and carries `usage`,
    `call_id`, `job_id` and `cost_usd`."""

    id: str = ""
    object: str = "chat.completion.chunk"
    created: int = 0
    model: str = ""
    choices: list[ChunkChoice] = Field(default_factory=list)
    usage: Usage | None = None
    call_id: str | None = None
    job_id: str | None = None
    cost_usd: Decimal | None = None
    resolved_model: str | None = None

    @property
    def content(self) -> str:
        """The text this chunk adds ("" for role, finish and usage chunks)."""
        return "".join(choice.delta.content or "" for choice in self.choices)

    @property
    def finish_reason(self) -> str | None:
        return next((c.finish_reason for c in self.choices if c.finish_reason), None)

    @property
    def is_final(self) -> bool:
        return not self.choices and self.usage is not None


# --- credits, usage -------------------------------------------------------------------------------


class Balance(_Model):
    team_id: str
    credits_allocated: Decimal
    credits_used: Decimal
    credits_reserved: Decimal
    credits_remaining: Decimal
    budget_mode: str  # job | usd | tokens
    low_balance_threshold: Decimal | None = None


class Transaction(_Model):
    transaction_id: str
    team_id: str
    kind: str  # grant | purchase | charge | refund | adjustment
    amount: Decimal
    balance_after: Decimal
    job_id: str | None = None
    reason: str = ""
    actor: str = ""
    created_at: datetime


TransactionList = Page[Transaction]


class UsageStats(_Model):
    jobs: int
    completed_jobs: int
    failed_jobs: int
    calls: int
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    cost_usd: Decimal
    credits_used: Decimal


class UsageRow(UsageStats):
    key: str  # ISO date, job type or model alias (by group_by)


class TeamUsage(_Model):
    team_id: str
    start_date: datetime
    end_date: datetime
    group_by: str = "day"
    summary: UsageStats
    count: int
    next: str | None = None
    previous: str | None = None
    results: list[UsageRow]


# --- webhooks -------------------------------------------------------------------------------------


class Webhook(_Model):
    webhook_id: str
    team_id: str
    webhook_url: str
    events: list[str]
    description: str = ""
    created_at: datetime


class WebhookCreated(Webhook):
    secret: str  # whsec_…, shown only once: keep it to verify signatures (see verify_webhook)


WebhookList = Page[Webhook]


class WebhookDelivery(_Model):
    delivery_id: str
    event_id: str
    event: str
    status: str  # pending | delivered | failed
    attempts: int
    last_status_code: int | None = None
    last_error: str = ""
    next_attempt_at: datetime | None = None
    delivered_at: datetime | None = None
    created_at: datetime


WebhookDeliveryList = Page[WebhookDelivery]


# --- models, team ---------------------------------------------------------------------------------


class ModelAlias(_Model):
    """A model alias as a team key sees it (admin keys also get access_groups and deployments)."""

    alias_name: str
    display_name: str = ""
    description: str = ""
    status: str = "active"
    access_groups: list[str] | None = None
    deployments: list[dict[str, Any]] | None = None


ModelAliasList = Page[ModelAlias]


class TeamKey(_Model):
    key_id: str
    name: str
    prefix: str
    created_at: datetime
    last_used_at: datetime | None = None
    expires_at: datetime | None = None
    revoked_at: datetime | None = None


class Team(_Model):
    team_id: str
    organization_id: str
    team_alias: str = ""
    status: str
    access_groups: list[str] = Field(default_factory=list)
    allowed_models: list[str] = Field(default_factory=list)
    default_model: str | None = None
    budget_mode: str
    credits_per_job: Decimal
    credits_per_dollar: Decimal
    tokens_per_credit: int
    min_reservation: Decimal
    markup_percent: Decimal | None = None  # admin keys only
    rpm_limit: int | None = None
    tpm_limit: int | None = None
    max_parallel_requests: int | None = None
    low_balance_threshold: Decimal | None = None
    store_prompts: bool = False
    expose_models: bool = False
    metadata: dict[str, Any] = Field(default_factory=dict)
    credits_remaining: Decimal
    keys: list[TeamKey] = Field(default_factory=list)
    created_at: datetime
    updated_at: datetime


# =================================================================================================
# Helpers
# =================================================================================================


M = TypeVar("M", bound=BaseModel)


def _parse(model: type[M], response: httpx.Response) -> M:
    # From the raw JSON text, so money becomes an exact Decimal (never through a float).
    return model.model_validate_json(response.content)


def _date_param(value: DateLike | None) -> str | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


def _params(**values: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in values.items():
        if value is None:
            continue
        if isinstance(value, (date, datetime)):
            value = _date_param(value)
        out[name] = value
    return out


def _messages(messages: str | Sequence[ChatMessage | Mapping[str, Any]]) -> list[dict[str, Any]]:
    if isinstance(messages, str):
        return [{"role": "user", "content": messages}]
    out = []
    for message in messages:
        if isinstance(message, BaseModel):
            out.append(message.model_dump(exclude_unset=True))
        else:
            out.append(dict(message))
    return out


def _chat_body(
    messages: str | Sequence[ChatMessage | Mapping[str, Any]],
    model: str | None,
    purpose: str | None,
    params: Mapping[str, Any],
) -> dict[str, Any]:
    body: dict[str, Any] = {"messages": _messages(messages)}
    if model is not None:
        body["model"] = model
    if purpose is not None:
        body["purpose"] = purpose
    body.update({name: value for name, value in params.items() if value is not None})
    return body


async def _iter_sse(response: httpx.Response) -> AsyncIterator[str]:
    """The `data` payloads of a text/event-stream response, one per event."""
    data: list[str] = []
    async for line in response.aiter_lines():
        if line == "":
            if data:
                yield "\n".join(data)
                data = []
            continue
        if line.startswith(":"):
            continue  # comment / keep-alive
        field, _, value = line.partition(":")
        if field == "data":
            data.append(value[1:] if value.startswith(" ") else value)
    if data:
        yield "\n".join(data)


class WebhookVerificationError(Exception):
    pass


def verify_webhook(
    payload: bytes | str, headers: Mapping[str, str], secret: str, *, tolerance_s: float = 300.0
) -> dict[str, Any]:
    """Check a delivery's Standard Webhooks signature (`webhook-id`, `webhook-timestamp`,
    `webhook-signature: v1,<base64 HMAC-SHA256>`) and return the decoded event.

    Raises WebhookVerificationError if the signature does not match or the timestamp is older or
    newer than `tolerance_s`. Receivers should also dedupe on `webhook-id` (at-least-once delivery).
    """
    lower = {k.lower(): v for k, v in headers.items()}
    message_id, timestamp, signatures = (
        lower.get("webhook-id"),
        lower.get("webhook-timestamp"),
        lower.get("webhook-signature"),
    )
    if not (message_id and timestamp and signatures):
        raise WebhookVerificationError("missing webhook-id, webhook-timestamp or webhook-signature header")
    try:
        sent_at = int(timestamp)
    except ValueError:
        raise WebhookVerificationError("invalid webhook-timestamp") from None
    if abs(time.time() - sent_at) > tolerance_s:
        raise WebhookVerificationError("webhook-timestamp outside the tolerance window")
    body = payload.encode() if isinstance(payload, str) else payload
    key = base64.b64decode(secret.removeprefix("whsec_"))
    expected = base64.b64encode(
        hmac.new(key, f"{message_id}.{sent_at}.".encode() + body, hashlib.sha256).digest()
    ).decode()
    for signature in signatures.split():
        version, _, value = signature.partition(",")
        if version == "v1" and hmac.compare_digest(value, expected):
            return json.loads(body)
    raise WebhookVerificationError("no matching signature")


# =================================================================================================
# Streaming
# =================================================================================================


class ChatStream:
    """An LLM call streamed as typed `ChatChunk`s.

    Iterate it (`async for chunk in stream`); when the stream ends, `usage`, `cost_usd`, `call_id`,
    `content` and `finish_reason` are set from the chunks and the final usage chunk. The request is
    sent on first iteration (or `await stream.start()` / `async with stream`); an error before the
    first byte raises the typed HTTP error, an error event after it raises `StreamError` (also kept in
    `stream.error`). Use `async with` (or `await stream.aclose()`) when you may stop early.
    """

    def __init__(self, client: SaaSLLMClient, job_id: str, body: dict[str, Any]) -> None:
        self._client = client
        self._body = body
        self._response: httpx.Response | None = None
        self._events: AsyncIterator[ChatChunk] | None = None
        self._parts: list[str] = []
        self.job_id: str = str(job_id)
        self.call_id: str | None = None
        self.model: str | None = None
        self.resolved_model: str | None = None
        self.usage: Usage | None = None
        self.cost_usd: Decimal | None = None
        self.finish_reason: str | None = None
        self.error: StreamError | None = None
        self.done = False  # [DONE] received
        self.chunks: int = 0
        self.request_id: str | None = None
        self.rate_limit: RateLimitInfo | None = None

    @property
    def content(self) -> str:
        """The text received so far (the whole answer once the stream is done)."""
        return "".join(self._parts)

    async def start(self) -> ChatStream:
        if self._response is None:
            self._response = await self._client._open_stream(self.job_id, self._body)
            self.request_id = self._response.headers.get("X-Request-Id")
            self.rate_limit = RateLimitInfo.from_headers(self._response.headers)
        return self

    def __aiter__(self) -> ChatStream:
        return self

    async def __anext__(self) -> ChatChunk:
        if self._events is None:
            await self.start()
            self._events = self._read()
        try:
            return await self._events.__anext__()
        except BaseException:
            await self.aclose()
            raise

    async def _read(self) -> AsyncIterator[ChatChunk]:
        assert self._response is not None
        try:
            async for data in _iter_sse(self._response):
                if data == "[DONE]":
                    self.done = True
                    break
                payload = json.loads(data)
                if isinstance(payload, dict) and "error" in payload and "choices" not in payload:
                    err = payload.get("error") or {}
                    self.error = StreamError(
                        f"stream error {err.get('code')}: {err.get('message')}",
                        code=err.get("code"),
                        detail=err.get("message"),
                        body=payload,
                        request_id=self.request_id,
                    )
                    continue  # read up to [DONE], then raise
                chunk = ChatChunk.model_validate_json(data)
                self.chunks += 1
                self.model = chunk.model or self.model
                self._parts.append(chunk.content)
                self.finish_reason = chunk.finish_reason or self.finish_reason
                if chunk.usage is not None:
                    self.usage = chunk.usage
                if chunk.call_id:
                    self.call_id = chunk.call_id
                if chunk.job_id:
                    self.job_id = chunk.job_id
                if chunk.cost_usd is not None:
                    self.cost_usd = chunk.cost_usd
                if chunk.resolved_model:
                    self.resolved_model = chunk.resolved_model
                yield chunk
        except httpx.TimeoutException as exc:
            raise APITimeoutError(f"stream timed out: {exc}", request_id=self.request_id) from exc
        except httpx.TransportError as exc:
            raise APIConnectionError(f"stream interrupted: {exc}", request_id=self.request_id) from exc
        if self.error is not None:
            raise self.error
        if not self.done:
            raise APIConnectionError("stream ended before [DONE]", request_id=self.request_id)

    async def collect(self) -> ChatStream:
        """Read the whole stream (discarding the chunks); returns self with usage/cost set."""
        async for _ in self:
            pass
        return self

    async def aclose(self) -> None:
        if self._response is not None and not self._response.is_closed:
            await self._response.aclose()

    async def __aenter__(self) -> ChatStream:
        return await self.start()

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.aclose()


# =================================================================================================
# Client
# =================================================================================================


class JobRun:
    """A job opened by `client.job(...)`: call the LLM through it; it is completed on exit."""

    def __init__(self, client: SaaSLLMClient, job: Job) -> None:
        self.client = client
        self.job = job
        self.completion: JobCompletion | None = None

    @property
    def job_id(self) -> str:
        return self.job.job_id

    async def chat(
        self,
        messages: str | Sequence[ChatMessage | Mapping[str, Any]],
        model: str | None = None,
        purpose: str | None = None,
        **params: Unpack[ChatParams],
    ) -> ChatResult:
        return await self.client.chat(self.job_id, messages, model=model, purpose=purpose, **params)

    def chat_stream(
        self,
        messages: str | Sequence[ChatMessage | Mapping[str, Any]],
        model: str | None = None,
        purpose: str | None = None,
        **params: Unpack[ChatParams],
    ) -> ChatStream:
        return self.client.chat_stream(self.job_id, messages, model=model, purpose=purpose, **params)


class SaaSLLMClient:
    """Async client bound to one team (a team key, or an admin key acting on `team_id`)."""

    def __init__(
        self,
        base_url: str = "http://localhost:8003",
        team_id: str | None = None,
        virtual_key: str | None = None,
        timeout: float = 60.0,
        max_retries: int = 3,
        *,
        backoff_base: float = 0.5,
        backoff_max: float = 8.0,
        max_retry_wait: float = 60.0,
        transport: httpx.AsyncBaseTransport | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """
        base_url: the gateway root (`http://localhost:8003`; a trailing `/api` is accepted too).
        team_id: the team acted on (sent as `team_id`; required with an admin key).
        virtual_key: `sk-…` (team or admin key).
        timeout: seconds per request (connect/read/write; for a stream: between two chunks).
        max_retries: retries after the first attempt (0 = never retry).
        backoff_base / backoff_max: exponential backoff (base × 2^attempt, capped, with jitter).
        max_retry_wait: the longest `Retry-After` the client waits for; beyond it the error is raised.
        """
        if not virtual_key:
            raise ValueError("virtual_key is required (an 'sk-…' key)")
        root = base_url.rstrip("/")
        for suffix in ("/api/v1", "/api"):
            if root.endswith(suffix):
                root = root[: -len(suffix)]
        self.base_url = root
        self.team_id = team_id
        self.timeout = timeout
        self.max_retries = max(0, int(max_retries))
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.max_retry_wait = max_retry_wait
        self._sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep
        self._http = httpx.AsyncClient(
            base_url=root,
            timeout=httpx.Timeout(timeout),
            transport=transport,
            headers={
                "Authorization": f"Bearer {virtual_key}",
                "Accept": "application/json",
                "User-Agent": USER_AGENT,
                **(headers or {}),
            },
        )

    # --- lifecycle ---------------------------------------------------------------------------------

    async def __aenter__(self) -> SaaSLLMClient:
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    # --- transport, retries ------------------------------------------------------------------------

    def _backoff(self, attempt: int) -> float:
        ceiling = min(self.backoff_max, self.backoff_base * (2**attempt))
        return ceiling * random.uniform(0.5, 1.0)  # jitter: spread retries of many clients

    def _retry_delay(self, error: SaaSLLMError, attempt: int) -> float | None:
        """Seconds to wait before retrying after `error`, or None to raise it now."""
        if attempt >= self.max_retries:
            return None
        retryable = error.status in RETRY_STATUSES or (error.status == 409 and error.code == "idempotency_in_progress")
        if not retryable:
            return None
        if error.retry_after is not None:
            if error.retry_after > self.max_retry_wait:
                return None  # not worth blocking for: let the caller decide
            return error.retry_after
        return self._backoff(attempt)

    async def _with_retries(
        self,
        send: Callable[[], Awaitable[httpx.Response]],
        *,
        retry_transport: tuple[type[Exception], ...],
        accept: Callable[[httpx.Response, int], bool] | None = None,
        what: str,
    ) -> httpx.Response:
        attempt = 0
        while True:
            try:
                response = await send()
            except retry_transport as exc:
                if attempt >= self.max_retries:
                    raise _connection_error(exc, what) from exc
                delay = self._backoff(attempt)
                logger.info("%s: %s; retry %d in %.2fs", what, type(exc).__name__, attempt + 1, delay)
            except httpx.TransportError as exc:
                raise _connection_error(exc, what) from exc
            else:
                if response.status_code < 400 or (accept is not None and accept(response, attempt)):
                    return response
                await response.aread()
                await response.aclose()
                error = error_from_response(response)
                delay = self._retry_delay(error, attempt)
                if delay is None:
                    raise error
                logger.info("%s: %s; retry %d in %.2fs", what, error.message, attempt + 1, delay)
            await self._sleep(delay)
            attempt += 1

    async def _request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json_body: Any = None,
        idempotency_key: str | None = None,
        accept: Callable[[httpx.Response, int], bool] | None = None,
    ) -> httpx.Response:
        headers: dict[str, str] = {}
        if method == "POST":
            # One key per logical POST, reused by every retry: the server replays the first answer.
            headers["Idempotency-Key"] = idempotency_key or str(uuid.uuid4())
        request_kwargs: dict[str, Any] = {"params": params or None, "headers": headers}
        if json_body is not None:
            request_kwargs["json"] = json_body

        async def send() -> httpx.Response:
            return await self._http.request(method, path, **request_kwargs)

        # Idempotency keys make every request here safe to resend after any transport failure.
        retry_on = (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError)
        return await self._with_retries(send, retry_transport=retry_on, accept=accept, what=f"{method} {path}")

    async def _open_stream(self, job_id: str, body: dict[str, Any]) -> httpx.Response:
        path = f"/api/jobs/{job_id}/llm-call-stream"

        async def send() -> httpx.Response:
            request = self._http.build_request("POST", path, json=body, headers={"Accept": "text/event-stream"})
            return await self._http.send(request, stream=True)

        # No Idempotency-Key here (the endpoint refuses it), so only retry when the server certainly
        # did not start the call: the connection was never made, or it answered 429/502/503/504.
        return await self._with_retries(
            send, retry_transport=(httpx.ConnectError, httpx.ConnectTimeout), what=f"POST {path}"
        )

    def _team_param(self) -> dict[str, str]:
        return {"team_id": self.team_id} if self.team_id else {}

    def _require_team(self) -> str:
        if not self.team_id:
            raise ValueError("this call needs the client's team_id")
        return self.team_id

    # --- jobs --------------------------------------------------------------------------------------

    async def create_job_full(
        self,
        job_type: str,
        metadata: Mapping[str, Any] | None = None,
        user_id: str | None = None,
        external_id: str | None = None,
        *,
        idempotency_key: str | None = None,
    ) -> Job:
        """POST /api/jobs/create → the created job (status `pending`)."""
        body: dict[str, Any] = {**self._team_param(), "job_type": job_type}
        if metadata is not None:
            body["metadata"] = dict(metadata)
        if user_id is not None:
            body["user_id"] = user_id
        if external_id is not None:
            body["external_id"] = external_id
        response = await self._request("POST", "/api/jobs/create", json_body=body, idempotency_key=idempotency_key)
        return _parse(Job, response)

    async def create_job(
        self,
        job_type: str,
        metadata: Mapping[str, Any] | None = None,
        user_id: str | None = None,
        external_id: str | None = None,
        *,
        idempotency_key: str | None = None,
    ) -> str:
        """POST /api/jobs/create → the new job's id."""
        job = await self.create_job_full(job_type, metadata, user_id, external_id, idempotency_key=idempotency_key)
        return job.job_id

    async def get_job(self, job_id: str) -> Job:
        """GET /api/jobs/{job_id}."""
        return _parse(Job, await self._request("GET", f"/api/jobs/{job_id}"))

    async def list_jobs(
        self,
        *,
        status: JobStatus | None = None,
        job_type: str | None = None,
        user_id: str | None = None,
        start_date: DateLike | None = None,
        end_date: DateLike | None = None,
        sort_by: SortBy | None = None,
        order: Order | None = None,
        limit: int | None = None,
        offset: int | None = None,
    ) -> JobList:
        """GET /api/jobs (newest first by default). A date `end_date` is inclusive."""
        params = _params(
            **self._team_param(),
            status=status,
            job_type=job_type,
            user_id=user_id,
            start_date=start_date,
            end_date=end_date,
            sort_by=sort_by,
            order=order,
            limit=limit,
            offset=offset,
        )
        return _parse(JobList, await self._request("GET", "/api/jobs", params=params))

    async def iter_jobs(self, *, page_size: int = 100, **filters: Any) -> AsyncIterator[Job]:
        """Every job matching `filters` (those of list_jobs), fetched page by page."""
        offset = 0
        while True:
            page = await self.list_jobs(limit=page_size, offset=offset, **filters)
            for job in page.results:
                yield job
            offset += len(page.results)
            if not page.next or not page.results:
                return

    async def complete_job(
        self,
        job_id: str,
        status: FinalStatus = "completed",
        metadata: Mapping[str, Any] | None = None,
        error_message: str | None = None,
        *,
        idempotency_key: str | None = None,
    ) -> JobCompletion:
        """POST /api/jobs/{job_id}/complete: charges credits once (`completed`) or releases the
        reservation (`failed`/`cancelled`). Completing again with the same status is harmless."""
        body: dict[str, Any] = {"status": status}
        if metadata is not None:
            body["metadata"] = dict(metadata)
        if error_message is not None:
            body["error_message"] = error_message
        response = await self._request(
            "POST", f"/api/jobs/{job_id}/complete", json_body=body, idempotency_key=idempotency_key
        )
        return _parse(JobCompletion, response)

    async def get_costs(self, job_id: str) -> JobCosts:
        """GET /api/jobs/{job_id}/costs: per-call cost breakdown."""
        return _parse(JobCosts, await self._request("GET", f"/api/jobs/{job_id}/costs"))

    @contextlib.asynccontextmanager
    async def job(
        self,
        job_type: str,
        metadata: Mapping[str, Any] | None = None,
        user_id: str | None = None,
        external_id: str | None = None,
    ) -> AsyncIterator[JobRun]:
        """Create a job, and complete it on exit: `completed`, or `failed` (with the exception as
        `error_message`, re-raised) if the block raises. `run.completion` holds the result."""
        run = JobRun(self, await self.create_job_full(job_type, metadata, user_id, external_id))
        try:
            yield run
        except BaseException as exc:
            with contextlib.suppress(Exception):
                run.completion = await asyncio.shield(
                    self.complete_job(run.job_id, "failed", error_message=f"{type(exc).__name__}: {exc}"[:5000])
                )
            raise
        run.completion = await self.complete_job(run.job_id)

    # --- LLM calls ---------------------------------------------------------------------------------

    async def chat(
        self,
        job_id: str,
        messages: str | Sequence[ChatMessage | Mapping[str, Any]],
        model: str | None = None,
        purpose: str | None = None,
        *,
        idempotency_key: str | None = None,
        **params: Unpack[ChatParams],
    ) -> ChatResult:
        """POST /api/jobs/{job_id}/llm-call. `messages` may be a plain string (one user message);
        `model` is an alias (default: the team's default model)."""
        response = await self._request(
            "POST",
            f"/api/jobs/{job_id}/llm-call",
            json_body=_chat_body(messages, model, purpose, params),
            idempotency_key=idempotency_key,
        )
        result = _parse(ChatResult, response)
        result.rate_limit = RateLimitInfo.from_headers(response.headers)
        result.request_id = response.headers.get("X-Request-Id")
        return result

    def chat_stream(
        self,
        job_id: str,
        messages: str | Sequence[ChatMessage | Mapping[str, Any]],
        model: str | None = None,
        purpose: str | None = None,
        **params: Unpack[ChatParams],
    ) -> ChatStream:
        """POST /api/jobs/{job_id}/llm-call-stream, as a `ChatStream` to iterate (see ChatStream)."""
        return ChatStream(self, job_id, _chat_body(messages, model, purpose, params))

    # --- credits and usage -------------------------------------------------------------------------

    async def get_balance(self) -> Balance:
        """GET /api/credits/balance."""
        return _parse(Balance, await self._request("GET", "/api/credits/balance", params=self._team_param()))

    async def get_transactions(
        self,
        *,
        kind: TransactionKind | None = None,
        job_id: str | None = None,
        start_date: DateLike | None = None,
        end_date: DateLike | None = None,
        limit: int | None = None,
        offset: int | None = None,
    ) -> TransactionList:
        """GET /api/credits/transactions (newest first)."""
        params = _params(
            **self._team_param(),
            kind=kind,
            job_id=job_id,
            start_date=start_date,
            end_date=end_date,
            limit=limit,
            offset=offset,
        )
        return _parse(TransactionList, await self._request("GET", "/api/credits/transactions", params=params))

    async def get_usage(
        self,
        group_by: GroupBy = "day",
        *,
        start_date: DateLike | None = None,
        end_date: DateLike | None = None,
        limit: int | None = None,
        offset: int | None = None,
    ) -> TeamUsage:
        """GET /api/teams/{team_id}/usage (default range: the last 30 days)."""
        params = _params(group_by=group_by, start_date=start_date, end_date=end_date, limit=limit, offset=offset)
        response = await self._request("GET", f"/api/teams/{self._require_team()}/usage", params=params)
        return _parse(TeamUsage, response)

    async def get_team(self) -> Team:
        """GET /api/teams/{team_id}: the team's configuration, allowed models and keys."""
        return _parse(Team, await self._request("GET", f"/api/teams/{self._require_team()}"))

    # --- models --------------------------------------------------------------------------------------

    async def list_models(self, *, limit: int | None = None, offset: int | None = None) -> ModelAliasList:
        """GET /api/model-aliases: the aliases this team may call."""
        params = _params(limit=limit, offset=offset)
        return _parse(ModelAliasList, await self._request("GET", "/api/model-aliases", params=params))

    async def get_model(self, alias_name: str) -> ModelAlias:
        """GET /api/model-aliases/{alias}: 404 `model_not_found` for an alias the team may not use."""
        return _parse(ModelAlias, await self._request("GET", f"/api/model-aliases/{alias_name}"))

    # --- webhooks ------------------------------------------------------------------------------------

    async def register_webhook(
        self,
        webhook_url: str,
        events: Sequence[WebhookEvent | str],
        description: str | None = None,
        *,
        idempotency_key: str | None = None,
    ) -> WebhookCreated:
        """POST /api/webhooks/register → the endpoint with its signing `secret` (shown only once)."""
        body: dict[str, Any] = {**self._team_param(), "webhook_url": webhook_url, "events": list(events)}
        if description is not None:
            body["description"] = description
        response = await self._request(
            "POST", "/api/webhooks/register", json_body=body, idempotency_key=idempotency_key
        )
        return _parse(WebhookCreated, response)

    async def list_webhooks(self, *, limit: int | None = None, offset: int | None = None) -> WebhookList:
        """GET /api/webhooks."""
        params = _params(**self._team_param(), limit=limit, offset=offset)
        return _parse(WebhookList, await self._request("GET", "/api/webhooks", params=params))

    async def get_webhook(self, webhook_id: str) -> Webhook:
        """GET /api/webhooks/{webhook_id}."""
        return _parse(Webhook, await self._request("GET", f"/api/webhooks/{webhook_id}"))

    async def delete_webhook(self, webhook_id: str) -> None:
        """DELETE /api/webhooks/{webhook_id} (a 404 on a *retry* means the first attempt deleted it)."""
        await self._request(
            "DELETE",
            f"/api/webhooks/{webhook_id}",
            accept=lambda response, attempt: response.status_code == 404 and attempt > 0,
        )

    async def list_deliveries(
        self, webhook_id: str, *, limit: int | None = None, offset: int | None = None
    ) -> WebhookDeliveryList:
        """GET /api/webhooks/{webhook_id}/deliveries (newest first)."""
        params = _params(limit=limit, offset=offset)
        response = await self._request("GET", f"/api/webhooks/{webhook_id}/deliveries", params=params)
        return _parse(WebhookDeliveryList, response)


def _connection_error(exc: Exception, what: str) -> APIConnectionError:
    cls = APITimeoutError if isinstance(exc, httpx.TimeoutException) else APIConnectionError
    return cls(f"{what}: {type(exc).__name__}: {exc}".rstrip(": "))


# =================================================================================================
# Sync twin
# =================================================================================================

P = ParamSpec("P")
R = TypeVar("R")


def _sync(
    method: Callable[Concatenate[SaaSLLMClient, P], Awaitable[R]],
) -> Callable[Concatenate[SyncSaaSLLMClient, P], R]:
    @functools.wraps(method)
    def call(self: SyncSaaSLLMClient, *args: P.args, **kwargs: P.kwargs) -> R:
        return self._run(method(self._client, *args, **kwargs))

    return call


class SyncChatStream:
    """Blocking iterator over a ChatStream; the same attributes (usage, cost_usd, call_id, …)."""

    def __init__(self, owner: SyncSaaSLLMClient, stream: ChatStream) -> None:
        self._owner = owner
        self._stream = stream

    def __iter__(self) -> Iterator[ChatChunk]:
        return self

    def __next__(self) -> ChatChunk:
        try:
            return self._owner._run(self._stream.__anext__())
        except StopAsyncIteration:
            raise StopIteration from None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)

    def collect(self) -> SyncChatStream:
        for _ in self:
            pass
        return self

    def close(self) -> None:
        self._owner._run(self._stream.aclose())

    def __enter__(self) -> SyncChatStream:
        self._owner._run(self._stream.start())
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()


class SyncSaaSLLMClient:
    """Blocking twin of SaaSLLMClient (same constructor and methods), running it on a private event
    loop. Use it from plain synchronous code, not from inside a running event loop."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._loop = asyncio.new_event_loop()
        try:
            self._client = SaaSLLMClient(*args, **kwargs)
        except BaseException:
            self._loop.close()
            raise

    def _run(self, awaitable: Awaitable[R]) -> R:
        return self._loop.run_until_complete(awaitable)

    @property
    def team_id(self) -> str | None:
        return self._client.team_id

    def close(self) -> None:
        if not self._loop.is_closed():
            self._run(self._client.aclose())
            self._loop.close()

    def __enter__(self) -> SyncSaaSLLMClient:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    create_job = _sync(SaaSLLMClient.create_job)
    create_job_full = _sync(SaaSLLMClient.create_job_full)
    get_job = _sync(SaaSLLMClient.get_job)
    list_jobs = _sync(SaaSLLMClient.list_jobs)
    complete_job = _sync(SaaSLLMClient.complete_job)
    get_costs = _sync(SaaSLLMClient.get_costs)
    chat = _sync(SaaSLLMClient.chat)
    get_balance = _sync(SaaSLLMClient.get_balance)
    get_transactions = _sync(SaaSLLMClient.get_transactions)
    get_usage = _sync(SaaSLLMClient.get_usage)
    get_team = _sync(SaaSLLMClient.get_team)
    list_models = _sync(SaaSLLMClient.list_models)
    get_model = _sync(SaaSLLMClient.get_model)
    register_webhook = _sync(SaaSLLMClient.register_webhook)
    list_webhooks = _sync(SaaSLLMClient.list_webhooks)
    get_webhook = _sync(SaaSLLMClient.get_webhook)
    delete_webhook = _sync(SaaSLLMClient.delete_webhook)
    list_deliveries = _sync(SaaSLLMClient.list_deliveries)

    def chat_stream(
        self,
        job_id: str,
        messages: str | Sequence[ChatMessage | Mapping[str, Any]],
        model: str | None = None,
        purpose: str | None = None,
        **params: Unpack[ChatParams],
    ) -> SyncChatStream:
        return SyncChatStream(self, self._client.chat_stream(job_id, messages, model=model, purpose=purpose, **params))
