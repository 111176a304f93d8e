import re

from rest_framework import pagination
from rest_framework.response import Response

from saas_llm.errors import RequestValidationError

_INTEGER = re.compile(r"-?\d+", re.ASCII)  # int() would also take "١", "1_0" and " 5"
MAXIMUM = 10**15  # an OFFSET past a bigint is a database error, not an empty page


def _int_at_least(request, name: str, default: int, minimum: int) -> int:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    if not _INTEGER.fullmatch(raw):
        raise RequestValidationError.single(["query", name], "value is not a valid integer", "type_error.integer")
    if len(raw.lstrip("-")) > len(str(MAXIMUM)) or int(raw) > MAXIMUM:
        raise RequestValidationError.single(
            ["query", name], f"ensure this value is less than or equal to {MAXIMUM}", "value_error.number.not_le"
        )
    value = int(raw)
    if value < minimum:
        raise RequestValidationError.single(
            ["query", name], f"ensure this value is greater than or equal to {minimum}", "value_error.number.not_ge"
        )
    return value


class LimitOffsetPagination(pagination.LimitOffsetPagination):
    """limit (1…, default 100, clamped to 1000) / offset (0…); bad values are 422, never silently
    ignored (SPEC §4: `limit=0` too — a page of nothing would make `next` point at itself)."""

    default_limit = 100
    max_limit = 1000

    def get_limit(self, request) -> int:
        return min(_int_at_least(request, self.limit_query_param, self.default_limit, 1), self.max_limit)

    def get_offset(self, request) -> int:
        return _int_at_least(request, self.offset_query_param, 0, 0)

    def get_paginated_response(self, data) -> Response:
        return Response(self.get_paginated_payload(data))

    def get_paginated_payload(self, data) -> dict:
        return {
            "count": self.count,
            "next": self.get_next_link(),
            "previous": self.get_previous_link(),
            "results": data,
        }
