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
    "429": "Rate limited",
    "502": "The provider failed",
    "503": "Database unavailable or no healthy deployment",
    "504": "The provider timed out",
}


OPENAI_ERROR_SCHEMA = {
    "type": "object",
    "properties": {
        "error": {
            "type": "object",
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "param": {"type": "string", "nullable": True},
                "code": {"type": "string", "nullable": True},
            },
            "required": ["message", "type"],
        }
    },
    "required": ["error"],
}


def add_error_responses(result, generator, request, public):
    """Document the error contract of SPEC §4 on every authenticated operation (OpenAI's shape on /v1/)."""
    schemas = result.setdefault("components", {}).setdefault("schemas", {})
    schemas["Error"], schemas["OpenAIError"] = ERROR_SCHEMA, OPENAI_ERROR_SCHEMA
    for path, operations in result.get("paths", {}).items():
        reference = {
            "$ref": "#/components/schemas/OpenAIError" if path.startswith("/v1/") else "#/components/schemas/Error"
        }
        for method, operation in operations.items():
            if path == "/health" or method not in ("get", "post", "put", "patch", "delete"):
                continue
            codes = ["401", "403", "404", "405", "422", "503"]
            if method in ("post", "put", "patch"):
                codes += ["400", "409"]
            responses = operation.setdefault("responses", {})
            if path.startswith("/v1/"):
                codes = [code for code in codes if code != "422"] + ["400", "429", "502", "503", "504"]
            for code in codes:
                entry = responses.setdefault(code, {"description": ERROR_DESCRIPTIONS[code]})
                entry.setdefault("content", {"application/json": {"schema": reference}})
    return result
