"""OpenAI-compatible routes (SPEC §5.2 beyond): POST /v1/chat/completions, GET /v1/models.

The official `openai` SDK works unchanged against `base_url=http://host:8003/v1` with a virtual key.
`X-Job-Id` attaches a call to an open job; without it the call runs as its own single-call job
(`job_type: "chat.completions"`) that is completed — and charged — when the call ends. A request
refused before the provider is called leaves no job, no reservation and no charge. Errors use
OpenAI's shape `{"error": {"message", "type", "code", "param"}}` and status codes (validation → 400).
"""

import time
import uuid
from dataclasses import dataclass
from typing import Any

from django.http import HttpRequest, JsonResponse
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers

from billing import services as billing
from jobs import gateway, llm_schema, services, streaming
from models_registry.models import ModelAlias
from models_registry.selectors import list_allowed_aliases
from saas_llm.async_views import AsyncAPIView, json_body
from saas_llm.errors import BadRequest, TeamMismatch, TeamSuspended, error_response
from tenants.auth import Principal
from tenants.models import Team
from tenants.selectors import get_team


class ChatCompletionOut(serializers.Serializer):
    id = serializers.CharField()
    object = serializers.CharField()
    created = serializers.IntegerField()
    model = serializers.CharField()
    choices = serializers.ListField(child=serializers.DictField())
    usage = serializers.DictField()


class ModelOut(serializers.Serializer):
    id = serializers.CharField()
    object = serializers.CharField()
    created = serializers.IntegerField()
    owned_by = serializers.CharField()


class ModelListOut(serializers.Serializer):
    object = serializers.CharField()
    data = ModelOut(many=True)


def openai_error(exc: Exception) -> JsonResponse:
    return error_response(exc, openai=True)


def _acting_team(principal: Principal, request: HttpRequest) -> Team:
    if principal.is_admin:
        team_id = request.headers.get("X-Team-Id")
        if not team_id:
            raise BadRequest("Admin keys must name the team with the X-Team-Id header", code="team_required")
        return get_team(team_id)
    assert principal.team is not None
    named = request.headers.get("X-Team-Id")
    if named and named != principal.team.id:
        raise TeamMismatch(named)
    return principal.team


def check_adhoc(*, team: Team, alias: str) -> None:
    """The checks of a single-call job, before anything is written (no job if they fail)."""
    if team.is_suspended:
        raise TeamSuspended()
    gateway.check_model_access(team, alias)


@dataclass
class PreparedChat:
    data: dict
    admitted: gateway.AdmittedCall  # on the X-Job-Id job, or on its own single-call job


def prepare_chat(request: HttpRequest) -> PreparedChat:
    """Validation and every check before the provider (sync: the view's prepare step, one
    transaction). Without X-Job-Id the call's single-call job is created here, started, with its
    credit hold — after every check, so a refusal leaves nothing behind."""
    data = llm_schema.validate_chat_completion(json_body(request))
    params = llm_schema.forwarded_params(data, llm_schema.OPENAI_PARAMS)
    if data.get("stream") and request.headers.get("Idempotency-Key"):
        raise BadRequest("Idempotency-Key is not supported for streaming requests", code="idempotency_not_supported")
    job_id = request.headers.get("X-Job-Id")
    if job_id:
        admitted = gateway.admit_call(
            principal=request.auth,
            job_id=job_id,
            alias=data["model"],
            purpose="",
            messages=data["messages"],
            params=params,
        )
        return PreparedChat(data=data, admitted=admitted)
    team = _acting_team(request.auth, request)
    check_adhoc(team=team, alias=data["model"])
    call = gateway.AdmittedCall(
        team=team,
        job=None,
        alias=data["model"],
        purpose="",
        messages=data["messages"],
        params=params,
        call_id=uuid.uuid4(),
        single_call=True,
    )
    estimated = gateway.estimate_tokens(call)
    billing.check_call_allowed(team=team, job_id=None)  # before the job exists: a refusal leaves nothing
    call.job = services.create_job(team=team, job_type="chat.completions", user_id=data.get("user"), started=True)
    return PreparedChat(data=data, admitted=gateway.admit_rate(call, estimated))


class ChatCompletionsView(AsyncAPIView):
    lean = True

    def handle_error(self, exc: Exception):
        return openai_error(exc)

    def prepare(self, request: HttpRequest) -> PreparedChat:
        return prepare_chat(request)

    async def abandon(self, prepared: PreparedChat) -> None:
        await gateway.release_admission(prepared.admitted, actual_tokens=0)

    @extend_schema(
        operation_id="openai_chat_completions",
        request=llm_schema.ChatCompletionIn,
        parameters=[
            OpenApiParameter("X-Job-Id", str, OpenApiParameter.HEADER, description="Attach the call to this open job."),
            OpenApiParameter("X-Team-Id", str, OpenApiParameter.HEADER, description="Admin keys only: the team."),
        ],
        responses={
            200: ChatCompletionOut,
            (200, "text/event-stream"): OpenApiResponse(
                response=str, description="chat.completion.chunk events, then [DONE]"
            ),
            400: OpenApiResponse(description="Invalid request"),
            401: OpenApiResponse(description="Invalid API key"),
            403: OpenApiResponse(description="Not allowed"),
            404: OpenApiResponse(description="Unknown model or job"),
            429: OpenApiResponse(description="Rate limited"),
            502: OpenApiResponse(description="Provider failure"),
            503: OpenApiResponse(description="No healthy deployment"),
            504: OpenApiResponse(description="Provider timeout"),
        },
        tags=["openai"],
    )
    async def post(self, request: HttpRequest):
        received = request.received_at
        prepared: PreparedChat = self.prepared
        data = prepared.data
        admitted = prepared.admitted
        admission = admitted.admission
        if data.get("stream", False):
            include_usage = bool((data.get("stream_options") or {}).get("include_usage"))
            response = await streaming.start_stream(admitted, received=received, include_usage=include_usage)
            response["X-Job-Id"] = str(admitted.job.id)
            return response
        body, provider_s, record = await gateway.call_admitted(admitted)
        message: dict[str, Any] = {"role": "assistant", "content": body["content"]}
        if body.get("tool_calls"):
            message["tool_calls"] = body["tool_calls"]
        payload = {
            "id": record.provider_response_id or f"chatcmpl-{record.call_id.hex}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": admitted.alias,
            "choices": [{"index": 0, "message": message, "finish_reason": body["finish_reason"], "logprobs": None}],
            "usage": {
                "prompt_tokens": record.prompt_tokens,
                "completion_tokens": record.completion_tokens,
                "total_tokens": record.prompt_tokens + record.completion_tokens,
            },
        }
        out = JsonResponse(payload)
        for name, value in admission.headers.items():
            out[name] = value
        out["X-Job-Id"] = str(admitted.job.id)
        out["X-Call-Id"] = str(record.call_id)
        out["X-Gateway-Overhead-Ms"] = f"{(time.perf_counter() - received - provider_s) * 1000:.2f}"
        return out


class ModelsView(AsyncAPIView):
    lean = True

    def handle_error(self, exc: Exception):
        return openai_error(exc)

    def prepare(self, request: HttpRequest) -> list[ModelAlias]:
        return list(list_allowed_aliases(_acting_team(request.auth, request).id))

    @extend_schema(operation_id="openai_models_list", responses={200: ModelListOut}, tags=["openai"])
    async def get(self, request: HttpRequest):
        data = [
            {"id": alias.name, "object": "model", "created": int(alias.created_at.timestamp()), "owned_by": "saas-llm"}
            for alias in self.prepared
        ]
        return JsonResponse({"object": "list", "data": data})
