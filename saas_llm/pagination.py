from rest_framework import pagination
from rest_framework.response import Response

from saas_llm.errors import RequestValidationError


def _non_negative_int(request, name: str, default: int) -> int:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise RequestValidationError.single(
            ["query", name], "value is not a valid integer", "type_error.integer"
        ) from None
    if value < 0:
        raise RequestValidationError.single(
            ["query", name], "ensure this value is greater than or equal to 0", "value_error.number.not_ge"
        )
    return value


class LimitOffsetPagination(pagination.LimitOffsetPagination):
    """limit (default 100, clamped to 1000) / offset; bad values are 422, never silently ignored."""

    default_limit = 100
    max_limit = 1000

    def get_limit(self, request) -> int:
        return min(_non_negative_int(request, self.limit_query_param, self.default_limit), self.max_limit)

    def get_offset(self, request) -> int:
        return _non_negative_int(request, self.offset_query_param, 0)

    def paginate_queryset(self, queryset, request, view=None):
        if self.get_limit(request) == 0:
            self.limit, self.offset, self.request = 0, self.get_offset(request), request
            self.count = self.get_count(queryset)
            return []
        return super().paginate_queryset(queryset, request, view)

    def get_paginated_response(self, data) -> Response:
        return Response(self.get_paginated_payload(data))

    def get_paginated_payload(self, data) -> dict:
        return {
            "count": self.count,
            "next": self.get_next_link(),
            "previous": self.get_previous_link(),
            "results": data,
        }
