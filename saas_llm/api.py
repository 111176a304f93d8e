"""Shared API plumbing: input parsing, strict serializers, health and the JSON 404 catch-all."""

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from django.conf import settings
from django.core.cache import cache
from django.core.exceptions import RequestDataTooBig
from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.request import Request

from saas_llm.async_views import AsyncAPIView
from saas_llm.db import use_worker_thread_connection
from saas_llm.errors import InputValidationError, RequestValidationError, error_response

logger = logging.getLogger(__name__)
S = TypeVar("S", bound=serializers.Serializer)


class StrictSerializer(serializers.Serializer):
    """Rejects unknown fields (422 `extra_forbidden`) — for inputs that set money, limits or config."""

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, dict):
            extra = sorted(set(data) - set(self.fields))
            if extra:
                raise serializers.ValidationError(
                    {
                        name: [serializers.ErrorDetail("extra fields not permitted", code="extra_forbidden")]
                        for name in extra
                    }
                )
        return super().to_internal_value(data)


def parse_body(serializer_class: type[S], request: Request, **kwargs: Any) -> dict[str, Any]:
    """Validate the JSON body with `serializer_class`; errors are 422 with loc ["body", …]."""
    data = request.data
    if not isinstance(data, dict):
        raise RequestValidationError.single(["body"], "value is not a valid dict", "type_error.dict")
    serializer = serializer_class(data=data, **kwargs)
    if not serializer.is_valid():
        raise InputValidationError(serializer.errors, "body")
    return serializer.validated_data


def parse_query(serializer_class: type[S], request: Request) -> dict[str, Any]:
    """Validate query parameters; errors are 422 with loc ["query", …]."""
    serializer = serializer_class(data=request.query_params.dict())
    if not serializer.is_valid():
        raise InputValidationError(serializer.errors, "query")
    return serializer.validated_data


# Each check gets this long: /health answers within 2 s even when the database or Redis hangs.
HEALTH_CHECK_TIMEOUT_S = 1.5
# Its own threads: a check stuck on a frozen database must not queue behind (or block) requests.
_health_checks = ThreadPoolExecutor(max_workers=8, thread_name_prefix="health")


class HealthView(AsyncAPIView):
    public = True

    @extend_schema(
        operation_id="health",
        responses={
            200: inline_serializer(
                "Health",
                {
                    "status": serializers.CharField(),
                    "version": serializers.CharField(),
                    "checks": serializers.DictField(child=serializers.CharField()),
                },
            ),
            503: inline_serializer(
                "HealthUnhealthy",
                {
                    "status": serializers.CharField(),
                    "version": serializers.CharField(),
                    "checks": serializers.DictField(child=serializers.CharField()),
                },
            ),
        },
        auth=[],
        tags=["health"],
    )
    async def get(self, request: HttpRequest) -> JsonResponse:
        database, cache_ = await asyncio.gather(_bounded(_check_database), _bounded(_check_cache))
        checks = {"database": database, "cache": cache_}
        healthy = all(value == "ok" for value in checks.values())
        body = {"status": "healthy" if healthy else "unhealthy", "version": settings.VERSION, "checks": checks}
        return JsonResponse(body, status=200 if healthy else 503)


async def _bounded(check: Callable[[], str]) -> str:
    try:
        return await asyncio.wait_for(asyncio.wrap_future(_health_checks.submit(check)), HEALTH_CHECK_TIMEOUT_S)
    except TimeoutError:
        logger.error("health: %s did not answer within %s s", check.__name__, HEALTH_CHECK_TIMEOUT_S)
        return "error"


def _check_database() -> str:
    try:
        use_worker_thread_connection()
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
        return "ok"
    except Exception as exc:  # any failure means unhealthy; report, never raise
        logger.error("health: database check failed: %s", exc)
        return "error"


def _check_cache() -> str:
    try:
        cache.set("health:ping", "pong", 10)
        return "ok" if cache.get("health:ping") == "pong" else "error"
    except Exception as exc:
        logger.error("health: cache check failed: %s", exc)
        return "error"


# The catch-all answers every method; without the exemption an unknown POST would get the CSRF HTML page.
@csrf_exempt
def not_found(request, *args: Any, **kwargs: Any) -> JsonResponse:
    return JsonResponse({"detail": "Not found", "code": "not_found"}, status=404)


def server_error(request, *args: Any, **kwargs: Any) -> JsonResponse:
    return JsonResponse({"detail": "Internal server error", "code": "internal_error"}, status=500)


def bad_request(request, exception: Exception | None = None, *args: Any, **kwargs: Any) -> JsonResponse:
    if isinstance(exception, RequestDataTooBig):  # a body over DATA_UPLOAD_MAX_MEMORY_SIZE
        return error_response(exception)
    return JsonResponse({"detail": "Bad request", "code": "invalid_request"}, status=400)


def permission_denied(request, *args: Any, **kwargs: Any) -> JsonResponse:
    return JsonResponse({"detail": "Forbidden"}, status=403)
