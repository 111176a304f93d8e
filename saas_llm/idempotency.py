"""Idempotency-Key support for every POST (SPEC §4).

Scope is (credential, key). The first request inserts an in-progress row (a unique constraint, so
only one process can win), runs, and stores its response when it is final (status < 500, not 409
or 429); a retry replays it with `Idempotent-Replayed: true` without doing the work again. A
different request under the same key is a 422, a retry while the first still runs a 409. Failed
first attempts delete their row so the client may retry. Streaming responses are never stored.

Whatever answers from a stored row (replay, 409, 422) first checks that the key still
authenticates: a revoked key gets the 401 any request of it gets, never the stored response.
One-time secrets (a new virtual key, a webhook signing secret) are never stored: the view names
them (`one_time_secrets`), the stored body goes without them, and a replay answers with the
secret removed and `"secret_redacted": true`.
"""

import hashlib
import json
import logging
from datetime import timedelta

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.db import DatabaseError, IntegrityError, transaction
from django.http import HttpResponse
from django.utils import timezone
from rest_framework.settings import api_settings

from saas_llm.db import db_sync_to_async
from saas_llm.errors import BadRequest, Conflict, RequestValidationError, UnprocessableRequest, error_response
from tenants.models import IdempotencyRecord, IdempotencyStatus, hash_key

logger = logging.getLogger(__name__)

HEADER = "Idempotency-Key"
MAX_KEY_LENGTH = 255
RETENTION = timedelta(hours=24)
# A first attempt still "in progress" after this long died with its worker: let a retry take over.
ABANDONED_AFTER = timedelta(minutes=10)
REPLAYED_HEADERS = ("Content-Type", "Retry-After", "X-Gateway-Overhead-Ms", "X-Job-Id", "X-Call-Id")
SECRETS_ATTRIBUTE = "one_time_secret_fields"


def one_time_secrets(response: HttpResponse, *fields: str) -> HttpResponse:
    """Mark top-level fields of a JSON response as secrets shown once: never stored for replay."""
    setattr(response, SECRETS_ATTRIBUTE, fields)
    return response


def _credential(request) -> str | None:
    header = request.headers.get("Authorization") or ""
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return hash_key(token.strip())


def _fingerprint(request) -> str:
    digest = hashlib.sha256()
    digest.update(request.method.encode())
    digest.update(b"\0" + request.path.removeprefix("/api/v1").removeprefix("/api").encode() + b"\0")
    digest.update(request.body or b"")
    return digest.hexdigest()


def _authenticate(request) -> None:
    """Raise the 401 a request with this key gets now (the API's own authentication class)."""
    for authentication in api_settings.DEFAULT_AUTHENTICATION_CLASSES:
        authentication().authenticate(request)


def _check_key(key: str) -> None:
    if not key:
        raise BadRequest(f"{HEADER} must not be empty", code="invalid_idempotency_key")
    if len(key) > MAX_KEY_LENGTH:
        raise RequestValidationError.single(
            ["header", HEADER],
            f"ensure this value has at most {MAX_KEY_LENGTH} characters",
            "value_error.any_str.max_length",
        )


def begin(request) -> tuple[IdempotencyRecord | None, HttpResponse | None]:
    """Claim the key for this request, or return the response to send instead (replay/409/422).

    Raises an ApiError for a key that is not valid, or a key no longer valid for a stored row."""
    key = request.headers.get(HEADER)
    _check_key(key)
    credential = _credential(request)
    if credential is None:
        return None, None  # unauthenticated: the view answers 401, nothing to remember
    fingerprint = _fingerprint(request)
    now = timezone.now()
    for _ in range(2):
        try:
            with transaction.atomic():
                record = IdempotencyRecord.objects.create(
                    credential=credential, key=key, fingerprint=fingerprint, expires_at=now + RETENTION
                )
            return record, None
        except IntegrityError:
            existing = IdempotencyRecord.objects.filter(credential=credential, key=key).first()
            if existing is None:
                continue  # deleted meanwhile (a failed first attempt): try to claim again
        if existing.expires_at <= now or (
            existing.status == IdempotencyStatus.IN_PROGRESS and existing.created_at < now - ABANDONED_AFTER
        ):
            IdempotencyRecord.objects.filter(pk=existing.pk, created_at=existing.created_at).delete()
            continue
        _authenticate(request)
        if existing.fingerprint != fingerprint:
            raise UnprocessableRequest("Idempotency-Key was used with a different request", code="idempotency_mismatch")
        if existing.status == IdempotencyStatus.IN_PROGRESS:
            raise Conflict("A request with this Idempotency-Key is still in progress", code="idempotency_in_progress")
        return None, _replay(existing)
    raise Conflict("A request with this Idempotency-Key is still in progress", code="idempotency_in_progress")


def _replay(record: IdempotencyRecord) -> HttpResponse:
    response = HttpResponse(bytes(record.response_body or b""), status=record.response_status)
    for name, value in record.response_headers.items():
        response[name] = value
    response["Idempotent-Replayed"] = "true"
    return response


def _stored_body(response: HttpResponse) -> bytes:
    secrets = getattr(response, SECRETS_ATTRIBUTE, ())
    if not secrets:
        return response.content
    body = json.loads(response.content)
    for name in secrets:
        body.pop(name, None)
    body["secret_redacted"] = True
    return json.dumps(body, separators=(",", ":")).encode()


def finish(record: IdempotencyRecord, response: HttpResponse) -> None:
    """Store a final response for replay; forget the key when the attempt may be retried."""
    storable = not response.streaming and response.status_code < 500 and response.status_code not in (409, 429)
    if not storable:
        IdempotencyRecord.objects.filter(pk=record.pk).delete()
        return
    headers = {name: response[name] for name in REPLAYED_HEADERS if response.has_header(name)}
    headers.update({name: value for name, value in response.items() if name.lower().startswith("x-ratelimit-")})
    IdempotencyRecord.objects.filter(pk=record.pk).update(
        status=IdempotencyStatus.COMPLETED,
        response_status=response.status_code,
        response_body=_stored_body(response),
        response_headers=headers,
    )


def abandon(record: IdempotencyRecord) -> None:
    IdempotencyRecord.objects.filter(pk=record.pk).delete()


def purge_expired(*, now=None) -> int:
    deleted, _ = IdempotencyRecord.objects.filter(expires_at__lt=now or timezone.now()).delete()
    return deleted


def _refused(request, exc: Exception) -> HttpResponse:
    """The error the view itself would have answered (OpenAI's error shape under /v1/)."""
    return error_response(exc, openai=request.path.startswith("/v1/"))


def _finish_or_log(record: IdempotencyRecord, response: HttpResponse) -> None:
    """The view's work is done: a database failure while storing its response must not turn it
    into an error. The key stays in progress and is reclaimed after ABANDONED_AFTER."""
    try:
        finish(record, response)
    except DatabaseError:
        logger.exception("could not store the response for Idempotency-Key record %s", record.pk)


_begin_async = db_sync_to_async(begin)
_finish_async = db_sync_to_async(_finish_or_log)
_abandon_async = db_sync_to_async(abandon)


class IdempotencyMiddleware:
    sync_capable = True
    async_capable = True

    def __init__(self, get_response):
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    @staticmethod
    def applies(request) -> bool:
        # The streaming endpoint refuses the header itself (400); nothing is stored for it.
        return request.method == "POST" and HEADER in request.headers and not request.path.endswith("/llm-call-stream")

    def __call__(self, request):
        if self.is_async:
            return self.__acall__(request)
        if not self.applies(request):
            return self.get_response(request)
        try:
            record, early = begin(request)
        except Exception as exc:  # outside the view: Django would answer a bare 500 or an HTML 400
            return _refused(request, exc)
        if early is not None or record is None:
            return early or self.get_response(request)
        try:
            response = self.get_response(request)
        except BaseException:
            abandon(record)
            raise
        _finish_or_log(record, response)
        return response

    async def __acall__(self, request):
        if not self.applies(request):
            return await self.get_response(request)
        try:
            record, early = await _begin_async(request)
        except Exception as exc:  # outside the view: Django would answer a bare 500 or an HTML 400
            return _refused(request, exc)
        if early is not None or record is None:
            return early or await self.get_response(request)
        try:
            response = await self.get_response(request)
        except BaseException:
            await _abandon_async(record)
            raise
        await _finish_async(record, response)
        return response
