"""The lean path: the hot LLM routes served without a thread hop outside their database steps.

Django's ASGI handler costs every request several hops between the event loop and worker threads:
the `request_started` / `request_finished` signals, a per-request executor for thread-sensitive
work, and one `sync_to_async` round per sync-only middleware (sessions, CSRF, auth, messages, …),
none of which the LLM routes use. `LeanDispatch` sits in front of Django's handler: a request whose
URL resolves to a view marked `lean` (saas_llm.async_views.AsyncAPIView subclasses opt in) runs
through `settings.LEAN_MIDDLEWARE` on the event loop and gets its response sent directly; every
other request (the admin, HTML pages, the rest of the API) goes to Django unchanged.

The lean chain keeps what these routes promise: request ids, CORS, the security and common
headers, idempotency, the JSON error contract — and a client disconnect still cancels the view.
Sync middlewares in LEAN_MIDDLEWARE must do no I/O: their hooks run inline on the event loop.
"""

import asyncio
import io
from collections.abc import Awaitable, Callable
from contextlib import aclosing

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.conf import settings
from django.core.exceptions import RequestAborted
from django.core.handlers.asgi import ASGIRequest
from django.core.handlers.exception import response_for_exception
from django.http import HttpRequest, HttpResponseBase
from django.urls import Resolver404, ResolverMatch, get_resolver
from django.utils.deprecation import MiddlewareMixin
from django.utils.module_loading import import_string

AsyncHandler = Callable[[HttpRequest], Awaitable[HttpResponseBase]]


class InlineHooks:
    """A sync-only Django middleware (MiddlewareMixin) whose hooks do no I/O, run on the event loop.

    MiddlewareMixin's own async mode runs each hook through `sync_to_async`; for hooks that only
    read headers and set them (security, common, clickjacking) that hop costs more than the hook."""

    def __init__(self, middleware_class: type[MiddlewareMixin], get_response: AsyncHandler):
        self.middleware = middleware_class(get_response)
        self.get_response = get_response
        markcoroutinefunction(self)

    async def __call__(self, request: HttpRequest) -> HttpResponseBase:
        middleware = self.middleware
        response = None
        if hasattr(middleware, "process_request"):
            response = middleware.process_request(request)
        if response is None:
            response = await self.get_response(request)
        if hasattr(middleware, "process_response"):
            response = middleware.process_response(request, response)
        return response


async def call_view(request: HttpRequest) -> HttpResponseBase:
    match: ResolverMatch = request.resolver_match
    return await match.func(request, *match.args, **match.kwargs)


def build_chain(paths: list[str], view: AsyncHandler = call_view) -> AsyncHandler:
    """The middlewares named in `paths` (outermost first) around `view`, every one async."""
    handler = view
    for path in reversed(paths):
        middleware_class = import_string(path)
        if issubclass(middleware_class, MiddlewareMixin):
            handler = InlineHooks(middleware_class, handler)
        else:
            if not getattr(middleware_class, "async_capable", False):
                raise TypeError(f"{path} is neither async-capable nor a MiddlewareMixin")
            handler = middleware_class(handler)
            if not iscoroutinefunction(handler):
                raise TypeError(f"{path} did not take its async mode")
    return handler


def _guarded(chain: AsyncHandler) -> AsyncHandler:
    """What Django's handler does with an exception escaping the middlewares: Http404, a disallowed
    host, a body too large, … become the project's JSON error responses (saas_llm.urls handlers)."""

    async def handle(request: HttpRequest) -> HttpResponseBase:
        try:
            return await chain(request)
        except Exception as exc:
            return response_for_exception(request, exc)

    return handle


def _response_headers(response: HttpResponseBase) -> list[tuple[bytes, bytes]]:
    headers = [
        (name.encode("ascii") if isinstance(name, str) else name, value.encode("latin1"))
        for name, value in response.items()
    ]
    for cookie in response.cookies.values():
        headers.append((b"Set-Cookie", cookie.output(header="").encode("ascii").strip()))
    return headers


class LeanDispatch:
    """ASGI application: lean views on the lean path, everything else to Django's handler."""

    def __init__(self, django_app: Callable):
        self.django_app = django_app
        self.resolver = get_resolver()
        self.chain = _guarded(build_chain(settings.LEAN_MIDDLEWARE))

    def lean_match(self, scope: dict) -> ResolverMatch | None:
        if scope["type"] != "http":
            return None
        path = scope["path"]
        root = scope.get("root_path") or ""
        if root and path.startswith(root):
            path = path[len(root) :]
        try:
            match = self.resolver.resolve(path)
        except Resolver404:
            return None
        return match if getattr(match.func, "lean", False) else None

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        match = self.lean_match(scope)
        if match is None:
            await self.django_app(scope, receive, send)
            return
        try:
            body = await read_body(receive)
        except RequestAborted:
            return
        request = ASGIRequest(scope, io.BytesIO(body))
        request.resolver_match = match
        # As Django does: the view runs in a task that a client disconnect cancels (the LLM call is
        # then recorded as cancelled), while a second task listens for that disconnect.
        respond = asyncio.create_task(self.respond(request, send))
        listen = asyncio.create_task(listen_for_disconnect(receive))
        await asyncio.wait((respond, listen), return_when=asyncio.FIRST_COMPLETED)
        for task in (listen, respond):
            if not task.done():
                task.cancel()
            try:
                await task
            except (asyncio.CancelledError, RequestAborted):
                pass

    async def respond(self, request: HttpRequest, send: Callable) -> None:
        response = await self.chain(request)
        try:
            await send_response(response, send)
        except asyncio.CancelledError:
            pass  # the client left while we were sending


async def read_body(receive: Callable) -> bytes:
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise RequestAborted()
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


async def listen_for_disconnect(receive: Callable) -> None:
    message = await receive()
    if message["type"] == "http.disconnect":
        raise RequestAborted()


async def send_response(response: HttpResponseBase, send: Callable) -> None:
    await send({"type": "http.response.start", "status": response.status_code, "headers": _response_headers(response)})
    if not response.streaming:
        await send({"type": "http.response.body", "body": response.content})
        return
    async with aclosing(aiter(response)) as content:
        async for part in content:
            if part:
                await send({"type": "http.response.body", "body": bytes(part), "more_body": True})
    await send({"type": "http.response.body", "body": b""})
