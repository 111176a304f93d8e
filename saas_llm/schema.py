"""drf-spectacular hooks: document each operation once, under /api/ (the /api/v1/ twins are aliases)."""

from drf_spectacular.extensions import OpenApiAuthenticationExtension


def drop_versioned_duplicates(endpoints, **kwargs):
    return [endpoint for endpoint in endpoints if not endpoint[0].startswith("/api/v1/")]


class BearerKeyScheme(OpenApiAuthenticationExtension):
    target_class = "tenants.auth.ApiKeyAuthentication"
    name = "bearerAuth"

    def get_security_definition(self, auto_schema):
        return {"type": "http", "scheme": "bearer", "description": "A virtual key: `Authorization: Bearer sk-…`"}


ERROR_SCHEMA = {
    "type": "object",
    "properties": {
        "detail": {
            "oneOf": [
                {"type": "string"},
                {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "loc": {"type": "array", "items": {"oneOf": [{"type": "string"}, {"type": "integer"}]}},
                            "msg": {"type": "string"},
                            "type": {"type": "string"},
                        },
                        "required": ["loc", "msg", "type"],
                    },
                },
            ]
        },
        "code": {"type": "string"},
    },
    "required": ["detail"],
}
ERROR_DESCRIPTIONS = {
    "400": "Malformed JSON or wrong content type",
    "401": "Missing, invalid, expired or revoked key",
    "403": "Not allowed for this key, team suspended, or insufficient credits",
    "404": "Not found (or another team's object)",
    "405": "Method not allowed",
    "409": "Conflict (duplicate id, finished job, idempotency key in progress)",
    "422": "Validation error",
    "503": "Database unavailable",
}


def add_error_responses(result, generator, request, public):
    """Document the error contract of SPEC §4 on every authenticated operation."""
    result.setdefault("components", {}).setdefault("schemas", {})["Error"] = ERROR_SCHEMA
    reference = {"$ref": "#/components/schemas/Error"}
    for path, operations in result.get("paths", {}).items():
        for method, operation in operations.items():
            if path == "/health" or method not in ("get", "post", "put", "patch", "delete"):
                continue
            codes = ["401", "403", "404", "405", "422", "503"]
            if method in ("post", "put", "patch"):
                codes += ["400", "409"]
            responses = operation.setdefault("responses", {})
            for code in codes:
                entry = responses.setdefault(code, {"description": ERROR_DESCRIPTIONS[code]})
                entry.setdefault("content", {"application/json": {"schema": reference}})
    return result
