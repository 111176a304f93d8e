"""Settings for saas-llm: one file, driven by environment variables (SPEC §2).

Every variable has an embedded default so a fresh machine runs with SQLite, a local-memory
cache and eager Celery; setting DATABASE_URL / REDIS_URL switches to Postgres / Redis.
"""

import os
from pathlib import Path

import dj_database_url

# litellm must never fetch its price map over the network; this has to be set before
# anything imports litellm, and settings are imported first by every entry point.
os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"

BASE_DIR = Path(__file__).resolve().parent.parent


def env_str(name: str, default: str) -> str:
    return os.environ.get(name, default)


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return int(value) if value not in (None, "") else default


def env_float(name: str, default: float) -> float:
    value = os.environ.get(name)
    return float(value) if value not in (None, "") else default


def env_list(name: str, default: str) -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


DEV_SECRET_KEY = "dev-only-insecure-secret-key-change-me"
SECRET_KEY = env_str("SECRET_KEY", DEV_SECRET_KEY)
DEBUG = env_bool("DEBUG", False)
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]")

# --- HTTPS -----------------------------------------------------------------------------------------
# SAAS_LLM_HTTPS=1: clients reach the gateway over HTTPS (directly, or through a TLS-terminating
# proxy: then also set SECURE_PROXY_SSL_HEADER to the header it sets, e.g. X-Forwarded-Proto).
# It turns on Secure session/CSRF cookies, HSTS and the redirect of plain HTTP (except /health, for
# load balancers); each can also be set on its own. Off by default: `make run` and tests are HTTP.
HTTPS = env_bool("SAAS_LLM_HTTPS", False)
_proxy_ssl_header = env_str("SECURE_PROXY_SSL_HEADER", "")
SECURE_PROXY_SSL_HEADER = (
    ("HTTP_" + _proxy_ssl_header.upper().replace("-", "_"), "https") if _proxy_ssl_header else None
)
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", HTTPS)
SECURE_REDIRECT_EXEMPT = [r"^health$"]
SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", HTTPS)
CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", HTTPS)
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 365 * 24 * 3600 if HTTPS else 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", HTTPS)
# Preloading is a commitment browsers remember for months: only when asked for.
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", False)
SILENCED_SYSTEM_CHECKS = [] if SECURE_HSTS_PRELOAD else ["security.W021"]
PORT = env_int("PORT", 8003)
VERSION = "0.1.0"

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "corsheaders",
    "tenants",
    "models_registry",
    "billing",
    "jobs",
]

MIDDLEWARE = [
    "saas_llm.middleware.RequestIdMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "saas_llm.middleware.StaticFilesMiddleware",  # WhiteNoise, async-capable
    "corsheaders.middleware.CorsMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "saas_llm.idempotency.IdempotencyMiddleware",
]
# The hot LLM routes (views marked `lean`) skip what only the admin and HTML pages need — sessions,
# CSRF, users, messages — and run these on the event loop (saas_llm/lean.py). Same order as above;
# a sync-only middleware here must do no I/O.
LEAN_MIDDLEWARE = [
    "saas_llm.middleware.RequestIdMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "corsheaders.middleware.CorsMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "saas_llm.idempotency.IdempotencyMiddleware",
]

# Larger request bodies answer 413 request_too_large (SPEC §4); Django's default, 2.5 MB.
DATA_UPLOAD_MAX_MEMORY_SIZE = env_int("DATA_UPLOAD_MAX_MEMORY_SIZE", 2_621_440)

ROOT_URLCONF = "saas_llm.urls"
APPEND_SLASH = False

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

ASGI_APPLICATION = "saas_llm.asgi.application"

DATABASE_URL = env_str("DATABASE_URL", f"sqlite:///{BASE_DIR / 'db.sqlite3'}")
DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=env_int("DB_CONN_MAX_AGE", 60))}
# Bounds on every database wait (seconds; 0 turns one off), so that a database that is down, slow
# or frozen makes a request answer 503 within seconds instead of hanging (SPEC §4): connecting,
# a statement, waiting for a row lock — and, client-side, any round trip (saas_llm/postgres).
DB_CONNECT_TIMEOUT = env_int("DB_CONNECT_TIMEOUT", 3)
DB_STATEMENT_TIMEOUT = env_float("DB_STATEMENT_TIMEOUT", 5.0)
DB_LOCK_TIMEOUT = env_float("DB_LOCK_TIMEOUT", 3.0)
DB_QUERY_DEADLINE_S = DB_STATEMENT_TIMEOUT + 1.0 if DB_STATEMENT_TIMEOUT else 0.0
DB_BREAKER_S = env_float("DB_BREAKER", 2.0)
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # SQLite serialises writers; a busy timeout turns lock contention into waiting instead of errors.
    DATABASES["default"]["OPTIONS"] = {"timeout": 20, "transaction_mode": "IMMEDIATE"}
    DATABASES["default"]["CONN_MAX_AGE"] = 0
else:
    DATABASES["default"]["ENGINE"] = "saas_llm.postgres"  # Django's, with client-side deadlines
    # No `SELECT 1` before every step: a connection is checked only after an error on it or when it
    # sat idle (saas_llm/db.py), so a restarted database costs no request its answer.
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = False
    server_limits = {"statement_timeout": DB_STATEMENT_TIMEOUT, "lock_timeout": DB_LOCK_TIMEOUT}
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        connect_timeout=DB_CONNECT_TIMEOUT,
        options=" ".join(f"-c {name}={int(seconds * 1000)}" for name, seconds in server_limits.items() if seconds),
        # A database host that vanishes without closing connections (network partition, frozen VM):
        # TCP keepalives and a send timeout break a reused connection in ~10 s instead of never.
        keepalives=1,
        keepalives_idle=5,
        keepalives_interval=2,
        keepalives_count=3,
        tcp_user_timeout=10_000,
        # Parameters bound by the server, statements prepared once per connection: no quoting of
        # every value in Python, no re-planning of the hot path's few statements.
        server_side_binding=env_bool("DB_SERVER_SIDE_BINDING", True),
    )
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = env_str("REDIS_URL", "")
if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": "saas_llm",
            "OPTIONS": {
                "CLIENT_CLASS": "django_redis.client.DefaultClient",
                "SOCKET_CONNECT_TIMEOUT": 1,
                "SOCKET_TIMEOUT": 1,
            },
        }
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "saas-llm"}}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
# Only for `collectstatic` in production; whitenoise serves straight from the apps otherwise.
STATIC_ROOT = env_str("STATIC_ROOT", "") or None
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
# Serve static files straight from the apps (no collectstatic step needed for `make run`).
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = DEBUG

CORS_ALLOWED_ORIGINS = env_list("CORS_ALLOWED_ORIGINS", "")
CORS_EXPOSE_HEADERS = [
    "X-Request-Id",
    "Idempotent-Replayed",
    "Retry-After",
    "X-Gateway-Overhead-Ms",
    "x-ratelimit-limit-requests",
    "x-ratelimit-remaining-requests",
    "x-ratelimit-limit-tokens",
    "x-ratelimit-remaining-tokens",
]
CORS_ALLOW_HEADERS = ["authorization", "content-type", "idempotency-key", "x-request-id", "x-job-id"]

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["tenants.auth.ApiKeyAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["tenants.auth.IsApiKey"],
    "DEFAULT_PARSER_CLASSES": ["saas_llm.parsers.StrictJSONParser"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PAGINATION_CLASS": "saas_llm.pagination.LimitOffsetPagination",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "saas_llm.errors.exception_handler",
    "UNAUTHENTICATED_USER": None,
    "DATETIME_FORMAT": "iso-8601",
    "COERCE_DECIMAL_TO_STRING": False,
    "PAGE_SIZE": 100,
}

SPECTACULAR_SETTINGS = {
    "TITLE": "saas-llm API",
    "DESCRIPTION": "Multi-tenant LLM gateway with job-based cost tracking and prepaid credits.",
    "VERSION": VERSION,
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    "PREPROCESSING_HOOKS": ["saas_llm.schema.drop_versioned_duplicates"],
    "POSTPROCESSING_HOOKS": ["drf_spectacular.hooks.postprocess_schema_enums", "saas_llm.schema.add_error_responses"],
    "ENUM_NAME_OVERRIDES": {
        "TeamStatusEnum": "tenants.models.TeamStatus",
        "RegistryStatusEnum": "models_registry.models.Status",
        "JobStatusEnum": "jobs.models.JobStatus",
        "JobCompletionStatusEnum": ["completed", "failed", "cancelled"],
        "DeliveryStatusEnum": "tenants.models.DeliveryStatus",
    },
}

# --- Celery (SPEC §2: eager when no broker is configured) ---------------------------------
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL", REDIS_URL)
CELERY_TASK_ALWAYS_EAGER = not CELERY_BROKER_URL
CELERY_TASK_EAGER_PROPAGATES = False
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_IGNORE_RESULT = True
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# A publish fails at once when the broker is down or hung (no reconnect loop, short socket
# timeouts): the request that commits an event must not wait for Redis, and what was not
# published stays in the outbox for the periodic sweep. socket_timeout stays above the worker's
# 1 s BRPOP timeout.
CELERY_BROKER_TRANSPORT_OPTIONS = {"max_retries": 0, "socket_connect_timeout": 1.0, "socket_timeout": 3.0}
CELERY_BEAT_SCHEDULE = {
    "release-expired-reservations": {"task": "billing.release_expired_reservations", "schedule": 300.0},
    "expire-stale-jobs": {"task": "jobs.expire_stale_jobs", "schedule": 60.0},
    "purge-idempotency-keys": {"task": "tenants.purge_idempotency_keys", "schedule": 3600.0},
    "purge-old-events": {"task": "tenants.purge_old_events", "schedule": 3600.0},
    "sweep-webhook-deliveries": {"task": "tenants.sweep_webhook_deliveries", "schedule": 15.0},
    "replay-spooled-calls": {"task": "jobs.replay_spooled_calls", "schedule": 30.0},
}

# --- Product settings ------------------------------------------------------------------------
SAAS_LLM_WEBHOOK_ALLOW_PRIVATE = env_bool("SAAS_LLM_WEBHOOK_ALLOW_PRIVATE", DEBUG)
SAAS_LLM_JOB_TIMEOUT_S = env_int("SAAS_LLM_JOB_TIMEOUT", 24 * 3600)
# A key's last_used_at is written at most once per this many seconds (never on every request).
SAAS_LLM_KEY_TOUCH_INTERVAL_S = env_int("SAAS_LLM_KEY_TOUCH_INTERVAL", 60)
# Days the event log (job.*, credits.low_balance: one row per completed job) is kept once delivered.
SAAS_LLM_EVENT_RETENTION_DAYS = env_int("SAAS_LLM_EVENT_RETENTION_DAYS", 30)

# Environment variables a deployment may name as its provider key (`os.environ/NAME`), as
# shell-style patterns (SPEC §5.6). The server's own settings are refused whatever this says.
SAAS_LLM_PROVIDER_KEY_ENV = env_list("SAAS_LLM_PROVIDER_KEY_ENV", "*_API_KEY,*_API_TOKEN,*_ACCESS_KEY")

# litellm Router policy (SPEC §5.6): retries per tier, then the next priority tier.
SAAS_LLM_NUM_RETRIES = env_int("SAAS_LLM_NUM_RETRIES", 2)
SAAS_LLM_ALLOWED_FAILS = env_int("SAAS_LLM_ALLOWED_FAILS", 3)
SAAS_LLM_COOLDOWN_S = env_int("SAAS_LLM_COOLDOWN", 30)

# A call the database cannot record is retried this long, then spooled here until it can (jobs/spool.py).
SAAS_LLM_RECORD_RETRY_S = env_float("SAAS_LLM_RECORD_RETRY", 3.0)
SAAS_LLM_SPOOL_DIR = env_str("SAAS_LLM_SPOOL_DIR", str(BASE_DIR / "var" / "spool"))

# TPM admission counts the prompt plus max_tokens, or this when the client sent no max_tokens.
SAAS_LLM_TPM_DEFAULT_MAX_TOKENS = env_int("SAAS_LLM_TPM_DEFAULT_MAX_TOKENS", 256)

# Seconds to wait before each retry of a failed webhook delivery (8 attempts over ~24 h by default).
SAAS_LLM_WEBHOOK_RETRY_SCHEDULE = [
    float(value) for value in env_list("SAAS_LLM_WEBHOOK_RETRY_SCHEDULE", "30,120,600,1800,7200,21600,50400")
]

LOG_LEVEL = env_str("LOG_LEVEL", "INFO")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"request_id": {"()": "saas_llm.middleware.RequestIdLogFilter"}},
    "formatters": {
        "structured": {
            "format": "%(asctime)s level=%(levelname)s logger=%(name)s request_id=%(request_id)s %(message)s",
        }
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "structured", "filters": ["request_id"]}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django.request": {"level": "ERROR"},
        "LiteLLM": {"level": "WARNING"},
        "httpx": {"level": "WARNING"},
    },
}
