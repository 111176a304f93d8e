"""Provider API keys of deployments: references to environment variables, never secrets (SPEC §5.6).

A deployment names its key as `os.environ/NAME`; litellm reads the variable when it calls the
provider and sends its value to the deployment's `api_base`, which an admin key chooses. So NAME
must be a provider key: it must match the allowlist `SAAS_LLM_PROVIDER_KEY_ENV` (shell-style
patterns; default: names ending in `_API_KEY`, `_API_TOKEN` or `_ACCESS_KEY`), and the server's
own settings are refused whatever the allowlist says. Enforced wherever a deployment is written
(API, admin, `create_model_alias`) and again when the routing table is built.
"""

import re
from fnmatch import fnmatchcase

from django.conf import settings
from django.core.exceptions import ValidationError

REFERENCE = re.compile(r"os\.environ/([A-Za-z_][A-Za-z0-9_]*)")
# The server's own configuration: never a provider key, whatever the allowlist says.
SERVER_SETTINGS = frozenset(
    {"SECRET_KEY", "DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL", "CELERY_RESULT_BACKEND", "SAAS_LLM_METRICS_TOKEN"}
)
SERVER_PREFIXES = ("DJANGO_", "SAAS_LLM_", "DB_", "PG", "POSTGRES", "REDIS_", "CELERY_", "OTEL_")


def is_provider_key_name(name: str) -> bool:
    """Whether an environment variable may be sent to a provider as a deployment's API key."""
    if name in SERVER_SETTINGS or name.startswith(SERVER_PREFIXES):
        return False
    return any(fnmatchcase(name, pattern) for pattern in settings.SAAS_LLM_PROVIDER_KEY_ENV)


def validate_api_key_reference(value: str) -> None:
    """Django validator (model field, admin form and API serializer): an allowed `os.environ/NAME`."""
    if not value:
        return
    match = REFERENCE.fullmatch(value)
    if match is None:
        raise ValidationError(
            "must be a reference such as 'os.environ/OPENAI_API_KEY'; literal secrets are never stored",
            code="invalid",
        )
    if not is_provider_key_name(match.group(1)):
        allowed = ", ".join(settings.SAAS_LLM_PROVIDER_KEY_ENV)
        raise ValidationError(
            f"{match.group(1)} is not a provider key variable (allowed: {allowed}; see SAAS_LLM_PROVIDER_KEY_ENV)",
            code="not_a_provider_key",
        )
