"""The LLM-call path shared by the JSON and streaming endpoints: admission, provider call, pricing,
error mapping. DB work happens in short sync steps (admit, record) run off the event loop."""

import asyncio
import logging
import re
import time
import uuid
from dataclasses import dataclass
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings

from billing import money
from billing import services as billing
from jobs import services, spool
from jobs.errors import JobAlreadyFinished, JobNotFound, UpstreamError
from jobs.models import CallStatus, Job
from jobs.selectors import parse_job_id
from jobs.services import CallRecord
from jobs.sql import job_with_team
from models_registry.errors import AliasNotFound, ModelNotAllowed, NoDefaultModel
from models_registry.models import ModelAlias
from models_registry.pricing import price_call
from models_registry.router import DeploymentInfo, NoDeployment, RegistryRouter, current_version, router_holder
from models_registry.sql import team_may_use
from saas_llm.db import db_sync_to_async
from saas_llm.errors import TeamSuspended
from tenants import limits
from tenants.auth import Principal
from tenants.models import Team

logger = logging.getLogger(__name__)

FINISH_REASONS = {"stop", "length", "tool_calls", "content_filter"}


@dataclass
class AdmittedCall:
    team: Team
    job: Job
    alias: str
    purpose: str
    messages: list[dict]
    params: dict[str, Any]
    call_id: uuid.UUID
    single_call: bool = False  # the job exists for this call: recording the call completes it
    admission: limits.Admission | None = None  # the rate limiter's, released when the call ends

    @property
    def request_body(self) -> dict | None:
        return {"messages": self.messages, **self.params} if self.team.store_prompts else None


def check_model_access(team: Team, alias: str) -> None:
    """404 for an alias that does not exist, 403 for one the team may not use (SPEC §5.6: only an
    active alias in one of the team's active groups; an inactive alias is not an unknown one)."""
    if not team_may_use(team.id, alias):
        if not ModelAlias.objects.filter(name=alias).exists():
            raise AliasNotFound(alias)
        raise ModelNotAllowed(alias)


def admit_call(
    *, principal: Principal, job_id: str, alias: str | None, purpose: str | None, messages: list[dict], params: dict
) -> AdmittedCall:
    """Every check before the provider is called: job scope (404), suspended team (403), terminal
    job (409), alias unknown (404) / not allowed (403), usage-mode credits (403), rate limits (429).
    Marks the job started. Runs inside the admission's transaction (a refusal rolls it back)."""
    job = job_with_team(parse_job_id(job_id), None if principal.is_admin else principal.team.id)
    if job is None:
        raise JobNotFound()
    team = job.team
    if team.is_suspended:
        raise TeamSuspended()
    if job.is_terminal:
        raise JobAlreadyFinished(job.status)
    alias = alias or team.default_model_id
    if not alias:
        raise NoDefaultModel()
    check_model_access(team, alias)
    billing.check_call_allowed(team=team, job_id=job.id)
    call = AdmittedCall(
        team=team, job=job, alias=alias, purpose=purpose or "", messages=messages, params=params, call_id=uuid.uuid4()
    )
    estimated = estimate_tokens(call)
    services.mark_started(job=job)
    return admit_rate(call, estimated)


def team_limits(team: Team) -> limits.Limits:
    return limits.Limits(rpm=team.rpm_limit, tpm=team.tpm_limit, parallel=team.max_parallel_requests)


def estimate_tokens(admitted: AdmittedCall) -> int:
    """TPM admission: litellm's count of the prompt plus max_tokens (or the configured default)."""
    if admitted.team.tpm_limit is None:
        return 0
    import litellm

    try:
        prompt = litellm.token_counter(model="gpt-4o-mini", messages=admitted.messages)
    except Exception:  # odd content parts: fall back to a character estimate
        prompt = sum(len(str(message.get("content") or "")) for message in admitted.messages) // 4 + 1
    return int(prompt) + int(admitted.params.get("max_tokens") or settings.SAAS_LLM_TPM_DEFAULT_MAX_TOKENS)


def admit_rate(call: AdmittedCall, estimated_tokens: int) -> AdmittedCall:
    """The rate limiter's admission (429), the last step of an admission's transaction: what the
    admission wrote before is rolled back by a refusal, and nothing can fail after it but the commit
    (then the view gives the slot back: `release_admission`)."""
    if router_holder.check_due():  # the routing table's freshness check, in this transaction
        router_holder.observe(current_version())
    call.admission = limits.admit(
        team_id=call.team.id, limits=team_limits(call.team), estimated_tokens=estimated_tokens
    )
    return call


async def release_admission(call: AdmittedCall, *, actual_tokens: int | None) -> None:
    if call.admission is not None:
        await limits.release(call.admission, actual_tokens=actual_tokens)


@db_sync_to_async
def _record(admitted: AdmittedCall, record: CallRecord) -> None:
    services.record_call(team=admitted.team, job_id=admitted.job.id, record=record, complete_job=admitted.single_call)


async def save_call(admitted: AdmittedCall, record: CallRecord) -> None:
    """Write the call row (and complete a single-call job) in one transaction, off the event loop.

    The provider has answered: the call must reach the books whatever the database does. A failing
    database is retried with backoff for SAAS_LLM_RECORD_RETRY_S; then the call is spooled to disk
    and recorded once the database is back (jobs/spool.py). Raises only if the disk refuses too.
    """
    deadline = time.monotonic() + settings.SAAS_LLM_RECORD_RETRY_S
    delay = 0.05
    while True:
        try:
            await _record(admitted, record)
            return
        except spool.UNAVAILABLE as exc:
            if time.monotonic() + delay > deadline:
                logger.error("call %s spooled: the database is unavailable (%s)", record.call_id, exc)
                break
        await asyncio.sleep(delay)
        delay = min(delay * 2, 1.0)
    await sync_to_async(spool.save, thread_sensitive=False)(
        team_id=admitted.team.id, job_id=admitted.job.id, complete_job=admitted.single_call, record=record
    )


def usage_of(response: Any) -> tuple[int, int]:
    usage = getattr(response, "usage", None)
    if usage is None:
        return 0, 0
    return int(getattr(usage, "prompt_tokens", 0) or 0), int(getattr(usage, "completion_tokens", 0) or 0)


def served_by(registry: RegistryRouter, response: Any) -> tuple[DeploymentInfo | None, int]:
    """The deployment that answered and how many fallbacks were tried (from litellm's hidden params)."""
    hidden = getattr(response, "_hidden_params", None) or {}
    info = registry.deployment(hidden.get("model_id"))
    headers = hidden.get("additional_headers") or {}
    fallbacks = headers.get("x-litellm-attempted-fallbacks") or 0
    try:
        fallbacks = int(fallbacks)
    except (TypeError, ValueError):
        fallbacks = 0
    return info, fallbacks


def normalise_finish_reason(reason: str | None) -> str | None:
    if reason is None:
        return None
    if reason == "function_call":
        return "tool_calls"
    return reason if reason in FINISH_REASONS else "stop"


def priced_record(
    admitted: AdmittedCall,
    *,
    status: str,
    info: DeploymentInfo | None,
    prompt_tokens: int,
    completion_tokens: int,
    **fields: Any,
) -> CallRecord:
    cost = price_call(
        prices=info.prices if info else None,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        markup_percent=admitted.team.markup_percent,
        model=info.litellm_model if info else admitted.alias,
    )
    return CallRecord(
        call_id=admitted.call_id,
        model_alias=admitted.alias,
        purpose=admitted.purpose,
        status=status,
        deployment_id=info.deployment_id if info else None,
        resolved_model=info.litellm_model if info else "",
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        provider_cost_nanos=cost.provider_cost_nanos,
        cost_nanos=cost.cost_nanos,
        unpriced=cost.unpriced,
        price_snapshot=cost.snapshot,
        request_body=admitted.request_body,
        **fields,
    )


# What litellm puts before a provider's own message: "litellm.BadRequestError: OpenAIException - ".
_LIBRARY_PREFIX = re.compile(r"^(?:litellm\.\w+:\s*)?(?:\w+Exception\s*-\s*)?")


def provider_message(exc: Exception) -> str:
    """The provider's own error message, without our library's exception names."""
    body = getattr(exc, "body", None)
    if isinstance(body, dict) and isinstance(body.get("message"), str) and body["message"].strip():
        return body["message"][:1000]
    return _LIBRARY_PREFIX.sub("", str(getattr(exc, "message", None) or exc), count=1)[:1000]


def upstream_error(exc: Exception) -> UpstreamError:
    """Map a litellm exception (after retries and fallbacks) to the client's status (SPEC §4)."""
    import litellm

    message = str(getattr(exc, "message", None) or exc)
    if isinstance(exc, NoDeployment) or "No deployments available" in message:
        return UpstreamError(
            503, "No healthy deployment for this model right now", "upstream_unavailable", retry_after="1"
        )
    if isinstance(exc, litellm.BadRequestError):  # incl. context-window and content-policy errors
        return UpstreamError(400, provider_message(exc), "provider_bad_request")
    if isinstance(exc, litellm.Timeout):
        return UpstreamError(504, "The provider did not answer in time", "upstream_timeout")
    if isinstance(exc, litellm.RateLimitError):
        return UpstreamError(
            429, "The provider rate limited the request", "upstream_rate_limited", retry_after=_retry_after(exc)
        )
    if isinstance(exc, litellm.ServiceUnavailableError | litellm.APIConnectionError):
        return UpstreamError(503, "The provider is unavailable", "upstream_unavailable", retry_after="1")
    return UpstreamError(502, "The provider returned an invalid or failed response", "upstream_error")


def _retry_after(exc: Exception) -> str:
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None) or getattr(exc, "headers", None) or {}
    value = headers.get("retry-after") if hasattr(headers, "get") else None
    try:
        return str(max(1, int(float(value))))
    except (TypeError, ValueError):
        return "1"


def error_record(
    admitted: AdmittedCall, exc: Exception, mapped: UpstreamError, *, latency_ms: int, stream: bool
) -> CallRecord:
    return priced_record(
        admitted,
        status=CallStatus.ERROR,
        info=None,
        prompt_tokens=0,
        completion_tokens=0,
        stream=stream,
        error=f"{type(exc).__name__}: {str(exc)[:2000]}",
        error_code=mapped.code or "",
        client_error=str(mapped.detail),
        latency_ms=latency_ms,
    )


def elapsed_ms(since: float) -> int:
    return int((time.perf_counter() - since) * 1000)


def cost_usd(nanos: int) -> float:
    return float(money.nanos_to_usd(nanos))


def count_tokens(admitted: AdmittedCall, info: DeploymentInfo | None, completion_text: str) -> tuple[int, int]:
    """No provider usage (a stream cut, a call cancelled): count with litellm's token counter."""
    import litellm

    model = info.litellm_model if info else "gpt-3.5-turbo"
    try:
        prompt = litellm.token_counter(model=model, messages=admitted.messages)
        completion = (
            litellm.token_counter(model=model, text=completion_text, count_response_tokens=True)
            if completion_text
            else 0
        )
    except Exception:
        logger.exception("token counting failed for %s", model)
        prompt, completion = 0, 0
    return int(prompt), int(completion)


def first_choice(registry: RegistryRouter, alias: str) -> DeploymentInfo | None:
    """The deployment a call to `alias` tries first (for a call cancelled before any answer)."""
    candidates = [info for info in registry.deployments.values() if info.alias == alias]
    return min(candidates, key=lambda info: info.priority, default=None)


def cancelled_record(registry: RegistryRouter, admitted: AdmittedCall, started: float, *, stream: bool) -> CallRecord:
    """The client went away before the provider answered (the server cancels the request, and with it
    the provider call). The provider may have spent the prompt already: the call is recorded, never
    dropped, with the prompt counted and priced at the deployment tried first."""
    info = first_choice(registry, admitted.alias)
    prompt_tokens, _ = count_tokens(admitted, info, "")
    return priced_record(
        admitted,
        status=CallStatus.CANCELLED,
        info=info,
        prompt_tokens=prompt_tokens,
        completion_tokens=0,
        stream=stream,
        error="client disconnected",
        error_code="client_disconnected",
        latency_ms=elapsed_ms(started),
    )


async def call_admitted(admitted: AdmittedCall) -> tuple[dict, float, CallRecord]:
    """`call_provider` within its rate-limit admission: the slot is given back (with the tokens
    actually used) however the call ends; a provider error carries the rate-limit headers."""
    actual_tokens = None
    try:
        body, provider_s, record = await call_provider(admitted)
        actual_tokens = record.prompt_tokens + record.completion_tokens
    except UpstreamError as exc:
        exc.headers.update(admitted.admission.headers)
        raise
    finally:
        await release_admission(admitted, actual_tokens=actual_tokens)
    return body, provider_s, record


async def call_provider(admitted: AdmittedCall) -> tuple[dict, float, CallRecord]:
    """Call the provider through the Router and record the call (success or error)."""
    registry = await router_holder.get(admitted.alias)
    started = time.perf_counter()
    try:
        registry.check_routable(admitted.alias)
        response = await registry.router.acompletion(
            model=admitted.alias, messages=admitted.messages, **admitted.params
        )
    except asyncio.CancelledError:
        await asyncio.shield(save_call(admitted, cancelled_record(registry, admitted, started, stream=False)))
        raise
    except Exception as exc:
        mapped = upstream_error(exc)
        call_record = error_record(admitted, exc, mapped, latency_ms=elapsed_ms(started), stream=False)
        await save_call(admitted, call_record)
        raise mapped from None
    provider_s = time.perf_counter() - started
    info, fallbacks = served_by(registry, response)
    prompt_tokens, completion_tokens = usage_of(response)
    choice = response.choices[0]
    message = choice.message
    tool_calls = [call.model_dump() for call in message.tool_calls] if getattr(message, "tool_calls", None) else None
    body_out: dict[str, Any] = {
        "role": "assistant",
        "content": message.content,
        "finish_reason": normalise_finish_reason(choice.finish_reason),
        "tool_calls": tool_calls,
    }
    call_record = priced_record(
        admitted,
        status=CallStatus.SUCCESS,
        info=info,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        provider_response_id=response.id or "",
        finish_reason=body_out["finish_reason"] or "",
        latency_ms=int(provider_s * 1000),
        fallbacks=fallbacks,
        response_body=body_out if admitted.team.store_prompts else None,
    )
    await save_call(admitted, call_record)
    return body_out, provider_s, call_record
