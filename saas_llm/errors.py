"""One error hierarchy and one exception handler for the whole API (SPEC §4).

In app code, just raise: services raise `ApiError` subclasses carrying status and code, views
never catch them, and `exception_handler` renders every failure as `{"detail", "code"?}` — or the
422 list `{"detail": [{"loc", "msg", "type"}]}` for validation errors.
"""

import logging
from typing import Any

from django.conf import settings
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import RequestDataTooBig
from django.db import DatabaseError, InterfaceError, OperationalError
from django.http import Http404, JsonResponse
from rest_framework import exceptions as drf
from rest_framework.response import Response
from rest_framework.settings import api_settings

logger = logging.getLogger(__name__)


class ApiError(Exception):
    status_code = 400
    code: str | None = None
    detail = "Bad request"

    def __init__(self, detail: str | None = None, *, code: str | None = None, headers: dict | None = None):
        super().__init__(detail or self.detail)
        if detail is not None:
            self.detail = detail
        if code is not None:
            self.code = code
        self.headers = headers or {}

    def payload(self) -> dict[str, Any]:
        body: dict[str, Any] = {"detail": self.detail}
        if self.code:
            body["code"] = self.code
        return body


class BadRequest(ApiError):
    status_code = 400
    detail = "Bad request"


class Unauthorized(ApiError):
    status_code = 401
    detail = "Invalid or missing API key"

    def __init__(self, detail: str | None = None, **kwargs: Any):
        super().__init__(detail, **kwargs)
        self.headers.setdefault("WWW-Authenticate", "Bearer")


class Forbidden(ApiError):
    status_code = 403
    detail = "You do not have permission to perform this action."


class AdminKeyRequired(Forbidden):
    detail = "This endpoint requires an admin API key"
    code = "admin_required"


class TeamMismatch(Forbidden):
    code = "team_mismatch"

    def __init__(self, team_id: str):
        super().__init__(f"API key does not belong to team '{team_id}'")


class TeamSuspended(Forbidden):
    detail = "Team is suspended"
    code = "team_suspended"


class NotFound(ApiError):
    status_code = 404
    detail = "Not found"
    code = "not_found"


class Conflict(ApiError):
    status_code = 409
    detail = "Conflict"
    code = "conflict"


class RequestTooLarge(ApiError):
    status_code = 413
    code = "request_too_large"

    def __init__(self) -> None:
        super().__init__(f"Request body is larger than {settings.DATA_UPLOAD_MAX_MEMORY_SIZE} bytes")


class ServiceUnavailable(ApiError):
    status_code = 503
    detail = "Service temporarily unavailable"
    code = "service_unavailable"


class RequestValidationError(ApiError):
    """422 with the list format; `errors` is a list of {loc, msg, type}."""

    status_code = 422

    def __init__(self, errors: list[dict[str, Any]]):
        super().__init__("Validation error")
        self.errors = errors

    def payload(self) -> dict[str, Any]:
        return {"detail": self.errors}

    @classmethod
    def single(cls, loc: list[Any], msg: str, type_: str) -> "RequestValidationError":
        return cls([{"loc": loc, "msg": msg, "type": type_}])


# DRF error codes → the pydantic-style `type` the seed documents.
_TYPE_BY_CODE = {
    "required": "value_error.missing",
    "null": "type_error.none.not_allowed",
    "blank": "value_error.any_str.min_length",
    "max_length": "value_error.any_str.max_length",
    "min_length": "value_error.any_str.min_length",
    "max_value": "value_error.number.not_le",
    "min_value": "value_error.number.not_ge",
    "max_digits": "value_error.decimal.max_digits",
    "max_decimal_places": "value_error.decimal.max_places",
    "max_whole_digits": "value_error.decimal.whole_digits",
    "invalid_choice": "value_error.enum",
    "not_a_list": "type_error.list",
    "not_a_dict": "type_error.dict",
    "empty": "value_error.list.min_items",
    "extra_forbidden": "extra_forbidden",
    "does_not_exist": "value_error.not_found",
    "date": "value_error.datetime",
}


def flatten_validation_errors(detail: Any, loc: list[Any]) -> list[dict[str, Any]]:
    """Turn DRF's nested error structure into the 422 list of {loc, msg, type}."""
    if isinstance(detail, dict):
        out: list[dict[str, Any]] = []
        for key, value in detail.items():
            sub = loc if key in ("non_field_errors", api_settings.NON_FIELD_ERRORS_KEY) else [*loc, key]
            out.extend(flatten_validation_errors(value, sub))
        return out
    if isinstance(detail, list):
        if all(isinstance(item, (str, drf.ErrorDetail)) for item in detail):
            return [_error_item(item, loc) for item in detail]
        out = []
        for index, item in enumerate(detail):
            if item:  # ListSerializer reports `{}` for valid items
                out.extend(flatten_validation_errors(item, [*loc, index]))
        return out
    return [_error_item(detail, loc)]


def _error_item(item: Any, loc: list[Any]) -> dict[str, Any]:
    code = getattr(item, "code", None) or "invalid"
    msg = "field required" if code == "required" else str(item)
    return {
        "loc": loc,
        "msg": msg,
        "type": _TYPE_BY_CODE.get(code, f"value_error.{code}" if code != "invalid" else "type_error"),
    }


class InputValidationError(drf.ValidationError):
    """A DRF ValidationError that knows where the input came from (body, query, path, header)."""

    def __init__(self, detail: Any, location: str):
        super().__init__(detail)
        self.location = location


def _database_unavailable(exc: Exception) -> bool:
    return isinstance(exc, (OperationalError, InterfaceError))


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response:
    """Map every exception raised in a DRF view to the error contract of SPEC §4."""
    status, body, headers = render_exception(exc)
    return Response(body, status=status, headers=headers)


def render_exception(exc: Exception) -> tuple[int, dict[str, Any], dict[str, str]]:
    if isinstance(exc, RequestDataTooBig):  # Django's own limit on request.body
        exc = RequestTooLarge()
    if isinstance(exc, ApiError):
        return exc.status_code, exc.payload(), exc.headers
    if isinstance(exc, InputValidationError):
        return 422, {"detail": flatten_validation_errors(exc.detail, [exc.location])}, {}
    if isinstance(exc, drf.ValidationError):
        return 422, {"detail": flatten_validation_errors(exc.detail, ["body"])}, {}
    if isinstance(exc, (drf.ParseError, drf.UnsupportedMediaType)):
        detail = (
            str(exc.detail)
            if isinstance(exc, drf.ParseError)
            else "Request body must be JSON (Content-Type: application/json)"
        )
        return 400, {"detail": detail, "code": "invalid_request"}, {}
    if isinstance(exc, (drf.NotAuthenticated, drf.AuthenticationFailed)):
        return 401, {"detail": str(exc.detail)}, {"WWW-Authenticate": "Bearer"}
    if isinstance(exc, (drf.PermissionDenied, DjangoPermissionDenied)):
        return 403, {"detail": str(getattr(exc, "detail", "Forbidden"))}, {}
    if isinstance(exc, (drf.NotFound, Http404)):
        return 404, {"detail": "Not found", "code": "not_found"}, {}
    if isinstance(exc, drf.MethodNotAllowed):
        return 405, {"detail": str(exc.detail), "code": "method_not_allowed"}, {}
    if isinstance(exc, drf.NotAcceptable):
        return 406, {"detail": str(exc.detail)}, {}
    if isinstance(exc, drf.Throttled):
        return 429, {"detail": str(exc.detail), "code": "rate_limited"}, {}
    if isinstance(exc, drf.APIException):
        return exc.status_code, {"detail": str(exc.detail)}, {}
    if isinstance(exc, DatabaseError) and _database_unavailable(exc):
        logger.error("database unavailable: %s", exc)
        return 503, {"detail": "Database unavailable", "code": "database_unavailable"}, {"Retry-After": "1"}
    logger.exception("unhandled error", exc_info=exc)
    return 500, {"detail": "Internal server error", "code": "internal_error"}, {}


# OpenAI's error `type` by status, for the /v1 routes (SPEC §5.2).
OPENAI_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "invalid_request_error",
    409: "invalid_request_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
}


def openai_shape(status: int, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """A SPEC §4 error body in OpenAI's shape `{"error": {"message", "type", "param", "code"}}`:
    a validation error is a 400 naming the first problem."""
    detail = body.get("detail")
    param = None
    if isinstance(detail, list):
        status = 400
        first = detail[0] if detail else {}
        param = ".".join(str(part) for part in first.get("loc", [])[1:]) or None
        message = f"{param}: {first.get('msg')}" if param else str(first.get("msg"))
        code = "invalid_request"
    else:
        message, code = str(detail), body.get("code")
    if status == 401:
        code = code or "invalid_api_key"
    error_type = OPENAI_ERROR_TYPES.get(status, "api_error")
    return status, {"error": {"message": message, "type": error_type, "param": param, "code": code}}


def error_response(exc: Exception, *, openai: bool = False) -> JsonResponse:
    """The JSON response for `exc` outside DRF: SPEC §4's shape, or OpenAI's on the /v1 routes."""
    status, body, headers = render_exception(exc)
    if openai:
        status, body = openai_shape(status, body)
    response = JsonResponse(body, status=status)
    for name, value in headers.items():
        response[name] = value
    return response


class UnprocessableRequest(ApiError):
    """A well-formed request that cannot be processed (422 with a plain detail and a code)."""

    status_code = 422
    detail = "Unprocessable request"
