"""SSE streaming of an LLM call (SPEC §5.2).

Every check happens before the first byte. After it, a failure becomes an SSE error event and
`[DONE]`; a client disconnect cancels the upstream request. Whatever happens, the generator's
`finally` records the call exactly once, with the tokens actually produced.
"""

import asyncio
import json
import logging
import time
from typing import Any

from django.http import StreamingHttpResponse

from jobs import gateway
from jobs.errors import UpstreamError
from jobs.models import CallStatus
from models_registry.router import router_holder
from tenants import limits

logger = logging.getLogger(__name__)

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def sse(payload: Any) -> bytes:
    return (
        b"data: "
        + (payload if isinstance(payload, bytes) else json.dumps(payload, separators=(",", ":")).encode())
        + b"\n\n"
    )


DONE = b"data: [DONE]\n\n"


def chunk_payload(chunk: Any, alias: str) -> dict | None:
    """An OpenAI chat.completion.chunk for the client, with the alias as `model`."""
    choices = []
    for choice in getattr(chunk, "choices", None) or []:
        delta = choice.delta
        out: dict[str, Any] = {}
        if getattr(delta, "role", None):
            out["role"] = delta.role
        if getattr(delta, "content", None) is not None:
            out["content"] = delta.content
        if getattr(delta, "tool_calls", None):
            out["tool_calls"] = [
                call.model_dump(exclude_none=True) if hasattr(call, "model_dump") else call for call in delta.tool_calls
            ]
        choices.append(
            {
                "index": choice.index or 0,
                "delta": out,
                "finish_reason": gateway.normalise_finish_reason(choice.finish_reason),
            }
        )
    if not choices:
        return None
    return {
        "id": chunk.id,
        "object": "chat.completion.chunk",
        "created": chunk.created,
        "model": alias,
        "choices": choices,
    }


async def start_stream(
    admitted: gateway.AdmittedCall, *, received: float, include_usage: bool = True
) -> StreamingHttpResponse:
    """Open the upstream stream (provider errors before the first byte are JSON errors), then stream.

    `include_usage=False` omits the final usage chunk (OpenAI's default).
    """
    admission = admitted.admission
    registry = await router_holder.get(admitted.alias)
    started = time.perf_counter()
    try:
        registry.check_routable(admitted.alias)
        upstream = await registry.router.acompletion(
            model=admitted.alias,
            messages=admitted.messages,
            stream=True,
            stream_options={"include_usage": True},
            **admitted.params,
        )
    except asyncio.CancelledError:  # the client left before the provider's first byte
        record = gateway.cancelled_record(registry, admitted, started, stream=True)
        try:
            await asyncio.shield(gateway.save_call(admitted, record))
        finally:
            await asyncio.shield(limits.release(admission, actual_tokens=record.prompt_tokens))
        raise
    except Exception as exc:
        mapped = gateway.upstream_error(exc)
        record = gateway.error_record(admitted, exc, mapped, latency_ms=gateway.elapsed_ms(started), stream=True)
        await gateway.save_call(admitted, record)
        await limits.release(admission, actual_tokens=0)
        mapped.headers.update(admission.headers)
        raise mapped from None
    info, fallbacks = gateway.served_by(registry, upstream)
    response = StreamingHttpResponse(
        _events(admitted, admission, upstream, info, fallbacks, started, include_usage),
        content_type="text/event-stream",
        headers={**SSE_HEADERS, **admission.headers},
    )
    response["X-Gateway-Overhead-Ms"] = f"{(started - received) * 1000:.2f}"
    return response


async def _events(
    admitted: gateway.AdmittedCall,
    admission: limits.Admission,
    upstream: Any,
    info: Any,
    fallbacks: int,
    started: float,
    include_usage: bool = True,
):
    alias = admitted.alias
    text: list[str] = []
    usage: tuple[int, int] | None = None
    first_token_at: float | None = None
    finish_reason = ""
    response_id = ""
    outcome = CallStatus.CANCELLED  # until the stream ends one way or the other
    error: Exception | None = None
    try:
        async for chunk in upstream:
            response_id = response_id or getattr(chunk, "id", "") or ""
            chunk_usage = getattr(chunk, "usage", None)
            if chunk_usage is not None and getattr(chunk_usage, "completion_tokens", None) is not None:
                usage = (int(chunk_usage.prompt_tokens or 0), int(chunk_usage.completion_tokens or 0))
            payload = chunk_payload(chunk, alias)
            if payload is None:
                continue
            for choice in payload["choices"]:
                content = choice["delta"].get("content")
                if content:
                    text.append(content)
                    if first_token_at is None:
                        first_token_at = time.perf_counter()
                finish_reason = choice["finish_reason"] or finish_reason
            yield sse(payload)
        outcome = CallStatus.SUCCESS
    except asyncio.CancelledError:
        outcome = CallStatus.CANCELLED
        raise
    except GeneratorExit:
        outcome = CallStatus.CANCELLED
        raise
    except Exception as exc:  # the provider failed after the first byte
        outcome, error = CallStatus.ERROR, exc
    finally:
        if outcome != CallStatus.SUCCESS:
            await _close_upstream(upstream)
        record = _record(
            admitted, outcome, error, usage, text, info, fallbacks, started, first_token_at, finish_reason, response_id
        )
        # Shielded: a cancelled request must still reach the books.
        await asyncio.shield(gateway.save_call(admitted, record))
        await limits.release(admission, actual_tokens=record.prompt_tokens + record.completion_tokens)
    if outcome == CallStatus.SUCCESS and not include_usage:
        pass
    elif outcome == CallStatus.SUCCESS:
        prompt_tokens, completion_tokens = record.prompt_tokens, record.completion_tokens
        final: dict[str, Any] = {
            "id": response_id,
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": alias,
            "choices": [],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
            "call_id": str(admitted.call_id),
            "job_id": str(admitted.job.id),
            "cost_usd": gateway.cost_usd(record.cost_nanos),
        }
        if admitted.team.expose_models:
            final["resolved_model"] = record.resolved_model
        yield sse(final)
    else:
        mapped = mid_stream_error(error) if error else None
        yield sse(
            {
                "error": {
                    "message": mapped.detail if mapped else "stream interrupted",
                    "type": "upstream_error",
                    "code": mapped.code if mapped else "upstream_error",
                }
            }
        )
    yield DONE


def _record(
    admitted, outcome, error, usage, text, info, fallbacks, started, first_token_at, finish_reason, response_id
):
    if usage is None:
        usage = gateway.count_tokens(admitted, info, "".join(text))
    fields: dict[str, Any] = {
        "stream": True,
        "provider_response_id": response_id,
        "finish_reason": finish_reason,
        "latency_ms": gateway.elapsed_ms(started),
        "ttft_ms": int((first_token_at - started) * 1000) if first_token_at else None,
        "fallbacks": fallbacks,
    }
    if admitted.team.store_prompts:
        fields["response_body"] = {
            "role": "assistant",
            "content": "".join(text),
            "finish_reason": finish_reason or None,
        }
    if outcome == CallStatus.ERROR:
        mapped = mid_stream_error(error)
        fields["error"] = f"{type(error).__name__}: {str(error)[:2000]}"
        fields["error_code"] = mapped.code or ""
        fields["client_error"] = str(mapped.detail)
    elif outcome == CallStatus.CANCELLED:
        fields["error"] = "client disconnected"
        fields["error_code"] = "client_disconnected"
    return gateway.priced_record(
        admitted, status=outcome, info=info, prompt_tokens=usage[0], completion_tokens=usage[1], **fields
    )


def mid_stream_error(error: Exception) -> UpstreamError:
    mapped = gateway.upstream_error(error)
    if mapped.status_code == 503:
        # The provider answered, then broke off: a bad response (502), not an unavailable one.
        return UpstreamError(502, "The provider stream failed", "upstream_error")
    return mapped


async def _close_upstream(upstream: Any) -> None:
    """Cancel the provider request (closing the HTTP stream) — best effort, never raises."""
    for target in (upstream, getattr(upstream, "completion_stream", None)):
        close = getattr(target, "aclose", None)
        if close is None:
            continue
        try:
            await asyncio.wait_for(asyncio.shield(close()), timeout=2)
        except BaseException:  # noqa: BLE001 - closing is best effort; the call is recorded regardless
            pass
