"""Async API views for the LLM-call path (STYLE: keep it async end to end).

`AsyncAPIView` subclasses DRF's APIView only so drf-spectacular documents it like every other
endpoint; requests never go through DRF's sync dispatch. Its `as_view()` returns a coroutine
view that authenticates off the event loop — together with the view's own `prepare()` step, in
one worker-thread hop — awaits the handler, and renders errors per SPEC §4.
"""

import inspect
import time
from typing import Any

from asgiref.sync import markcoroutinefunction
from django.db import transaction
from django.http import HttpRequest, HttpResponse, HttpResponseBase, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from rest_framework.views import APIView

from saas_llm.db import db_sync_to_async
from saas_llm.errors import BadRequest, error_response
from saas_llm.parsers import parse_json
from tenants.auth import parse_bearer, resolve_api_key


def json_body(request: HttpRequest) -> Any:
    """The request's JSON body; 400 for a wrong content type or malformed JSON (never 415), 413
    over the size limit, 422 for a value that cannot be stored (saas_llm.parsers)."""
    content_type = request.content_type or ""
    if request.body and content_type != "application/json" and not content_type.endswith("+json"):
        raise BadRequest("Request body must be JSON (Content-Type: application/json)", code="invalid_request")
    if not request.body:
        return {}
    return parse_json(request.body)


class AsyncAPIView(APIView):
    prepared: Any = None
    public = False  # True: no API key (health): no key lookup, no thread hop, no `prepare`
    lean = False  # True: a hot route, served on the lean path (saas_llm/lean.py)

    def prepare(self, request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
        """Sync work of the request that needs the database, run right after authentication in
        the same worker-thread hop and the same transaction (validation, scope and admission
        checks, the writes of an admission). Its result is `self.prepared`. The default does nothing."""
        return None

    async def abandon(self, prepared: Any) -> None:
        """Undo what `prepare` holds outside the database (a rate-limit slot) when its transaction
        failed to commit after it returned. The default has nothing to undo."""

    @db_sync_to_async
    def _authenticate_and_prepare(self, request: HttpRequest, *args: Any, **kwargs: Any) -> None:
        raw_key = parse_bearer(request.headers.get("Authorization"))  # missing or malformed: 401, no database
        # One transaction for the key lookup and the whole admission (SPEC §5.6: at most two per call).
        with transaction.atomic():
            request.auth = resolve_api_key(raw_key)
            self.prepared = self.prepare(request, *args, **kwargs)

    @classmethod
    def as_view(cls, **initkwargs):
        async def view(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
            self = cls(**initkwargs)
            allowed = cls.async_methods()
            if request.method == "OPTIONS":
                return HttpResponse(status=200, headers={"Allow": ", ".join(allowed)})
            if request.method not in allowed:
                return JsonResponse(
                    {"detail": f'Method "{request.method}" not allowed.', "code": "method_not_allowed"},
                    status=405,
                    headers={"Allow": ", ".join(allowed)},
                )
            handler = getattr(self, request.method.lower())
            request.received_at = time.perf_counter()
            try:
                if not self.public:
                    try:
                        await self._authenticate_and_prepare(request, *args, **kwargs)
                    except BaseException:
                        if self.prepared is not None:  # prepared, then the commit failed
                            await self.abandon(self.prepared)
                        raise
                return await handler(request, *args, **kwargs)
            except Exception as exc:
                return self.handle_error(exc)

        markcoroutinefunction(view)
        view.cls = cls
        view.initkwargs = initkwargs
        view.lean = cls.lean
        return csrf_exempt(view)

    @classmethod
    def async_methods(cls) -> list[str]:
        """The methods this view implements as coroutines (DRF's sync defaults, e.g. options, are not)."""
        return [
            name.upper()
            for name in ("get", "post", "put", "patch", "delete")
            if inspect.iscoroutinefunction(getattr(cls, name, None))
        ]

    def handle_error(self, exc: Exception) -> HttpResponseBase:
        return error_response(exc)
