"""drf-spectacular hooks: document each operation once, under /api/ (the /api/v1/ twins are aliases)."""

from drf_spectacular.extensions import OpenApiAuthenticationExtension


def drop_versioned_duplicates(endpoints, **kwargs):
    return [endpoint for endpoint in endpoints if not endpoint[0].startswith("/api/v1/")]


class BearerKeyScheme(OpenApiAuthenticationExtension):
    target_class = "tenants.auth.ApiKeyAuthentication"
    name = "bearerAuth"

    def get_security_definition(self, auto_schema):
        return {"type": "http", "scheme": "bearer", "description": "A virtual key: `Authorization: Bearer sk-…`"}
