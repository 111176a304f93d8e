"""Request id (echo the client's X-Request-Id or make one, expose it to logs and responses); static files."""

import logging
import re
import uuid
from contextvars import ContextVar

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.http import JsonResponse
from whitenoise.middleware import WhiteNoiseMiddleware

request_id_var: ContextVar[str] = ContextVar("request_id", default="-")
_SAFE_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")


def _request_id(header: str | None) -> str:
    if header and _SAFE_ID.match(header):
        return header
    return uuid.uuid4().hex


class RequestIdMiddleware:
    sync_capable = True
    async_capable = True

    def __init__(self, get_response):
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request):
        if self.is_async:
            return self.__acall__(request)
        rid = _request_id(request.headers.get("X-Request-Id"))
        token = request_id_var.set(rid)
        request.request_id = rid
        try:
            response = self.get_response(request)
        finally:
            request_id_var.reset(token)
        response["X-Request-Id"] = rid
        return response

    async def __acall__(self, request):
        rid = _request_id(request.headers.get("X-Request-Id"))
        token = request_id_var.set(rid)
        request.request_id = rid
        try:
            response = await self.get_response(request)
        finally:
            request_id_var.reset(token)
        response["X-Request-Id"] = rid
        return response

    def process_exception(self, request, exception):
        # Last line of defence: never an HTML error page, whatever DEBUG says.
        from saas_llm.errors import render_exception

        status, body, headers = render_exception(exception)
        response = JsonResponse(body, status=status)
        for name, value in headers.items():
            response[name] = value
        return response


class RequestIdLogFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        return True


class StaticFilesMiddleware(WhiteNoiseMiddleware):
    """WhiteNoise, able to sit in an async middleware chain.

    WhiteNoise's middleware is sync-only; in an ASGI stack Django then runs it in a thread and the
    rest of the chain (every API request) back through async_to_sync — two cross-thread handoffs and
    one blocked thread per in-flight request. Here only a request for a static file is handled
    synchronously (the lookup is in memory, the file is streamed by the server); everything else
    goes straight down the async chain.
    """

    sync_capable = True
    async_capable = True

    def __init__(self, get_response, settings=None):
        from django.conf import settings as django_settings

        super().__init__(get_response, settings or django_settings)
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request):
        if self.is_async:
            return self.__acall__(request)
        return super().__call__(request)

    async def __acall__(self, request):
        static_file = self.find_file(request.path_info) if self.autorefresh else self.files.get(request.path_info)
        if static_file is not None:
            return self.serve(static_file, request)
        return await self.get_response(request)
