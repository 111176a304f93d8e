"""Async endpoints for LLM calls (SPEC §5.2): POST /api/jobs/{id}/llm-call and /llm-call-stream."""

import time
from typing import Any

from django.http import HttpRequest, JsonResponse
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers

from jobs import gateway, llm_schema, streaming
from saas_llm.async_views import AsyncAPIView, json_body
from saas_llm.errors import BadRequest


class ToolCallOut(serializers.Serializer):
    id = serializers.CharField()
    type = serializers.CharField()
    function = serializers.DictField()


class AssistantMessageOut(serializers.Serializer):
    role = serializers.CharField()
    content = serializers.CharField(allow_null=True)
    finish_reason = serializers.CharField(allow_null=True)
    tool_calls = ToolCallOut(many=True, allow_null=True)


class UsageOut(serializers.Serializer):
    prompt_tokens = serializers.IntegerField()
    completion_tokens = serializers.IntegerField()
    total_tokens = serializers.IntegerField()


class LLMCallOut(serializers.Serializer):
    call_id = serializers.UUIDField()
    job_id = serializers.UUIDField()
    model = serializers.CharField(help_text="The alias the team asked for.")
    resolved_model = serializers.CharField(required=False, help_text="Only when the team has expose_models.")
    response = AssistantMessageOut()
    usage = UsageOut()
    cost_usd = serializers.FloatField()
    latency_ms = serializers.IntegerField()


ERRORS = {
    400: OpenApiResponse(description="Malformed JSON, or the provider rejected the parameters"),
    401: OpenApiResponse(description="Missing, invalid, expired or revoked key"),
    403: OpenApiResponse(description="team_suspended, model_not_allowed or insufficient_credits"),
    404: OpenApiResponse(description="Job or model alias not found"),
    409: OpenApiResponse(description="job_already_finished"),
    422: OpenApiResponse(description="Validation error"),
    429: OpenApiResponse(description="Rate limited (by the gateway or the provider)"),
    502: OpenApiResponse(description="The provider failed"),
    503: OpenApiResponse(description="No healthy deployment"),
    504: OpenApiResponse(description="The provider timed out"),
}


def admit(request: HttpRequest, job_id: str) -> gateway.AdmittedCall:
    """Validate the body and run every check before the provider (sync: the view's prepare step)."""
    data = llm_schema.validate_llm_call(json_body(request))
    return gateway.admit_call(
        principal=request.auth,
        job_id=job_id,
        alias=data.get("model"),
        purpose=data.get("purpose"),
        messages=data["messages"],
        params=llm_schema.forwarded_params(data),
    )


class AdmittedCallView(AsyncAPIView):
    """An LLM call on a job: admitted in the prepare step, its rate-limit slot given back if the
    admission's transaction fails to commit."""

    lean = True

    def prepare(self, request: HttpRequest, job_id: str) -> gateway.AdmittedCall:
        return admit(request, job_id)

    async def abandon(self, prepared: gateway.AdmittedCall) -> None:
        await gateway.release_admission(prepared, actual_tokens=0)


class LLMCallView(AdmittedCallView):
    @extend_schema(
        operation_id="jobs_llm_call", request=llm_schema.LLMCallIn, responses={200: LLMCallOut, **ERRORS}, tags=["llm"]
    )
    async def post(self, request: HttpRequest, job_id: str) -> JsonResponse:
        received = request.received_at
        admitted = self.prepared
        admission = admitted.admission
        response, provider_s, record = await gateway.call_admitted(admitted)
        payload: dict[str, Any] = {
            "call_id": str(admitted.call_id),
            "job_id": str(admitted.job.id),
            "model": admitted.alias,
            "response": response,
            "usage": {
                "prompt_tokens": record.prompt_tokens,
                "completion_tokens": record.completion_tokens,
                "total_tokens": record.prompt_tokens + record.completion_tokens,
            },
            "cost_usd": gateway.cost_usd(record.cost_nanos),
            "latency_ms": record.latency_ms,
        }
        if admitted.team.expose_models:
            payload["resolved_model"] = record.resolved_model
        out = JsonResponse(payload)
        for name, value in admission.headers.items():
            out[name] = value
        out["X-Gateway-Overhead-Ms"] = f"{(time.perf_counter() - received - provider_s) * 1000:.2f}"
        return out


class LLMCallStreamView(AdmittedCallView):
    def prepare(self, request: HttpRequest, job_id: str) -> gateway.AdmittedCall:
        if request.headers.get("Idempotency-Key"):
            raise BadRequest(
                "Idempotency-Key is not supported on the streaming endpoint", code="idempotency_not_supported"
            )
        return super().prepare(request, job_id)

    @extend_schema(
        operation_id="jobs_llm_call_stream",
        request=llm_schema.LLMCallIn,
        responses={
            (200, "text/event-stream"): OpenApiResponse(
                response=str,
                description="`data: <chat.completion.chunk>` events; the last chunk has empty choices and carries usage, call_id, job_id, cost_usd; then `data: [DONE]`.",
            ),
            **ERRORS,
        },
        tags=["llm"],
    )
    async def post(self, request: HttpRequest, job_id: str):
        return await streaming.start_stream(self.prepared, received=request.received_at)
