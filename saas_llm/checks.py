from django.conf import settings
from django.core.exceptions import ImproperlyConfigured


def refuse_insecure_secret_key() -> None:
    """Refuse to serve with the embedded dev SECRET_KEY unless DEBUG is on (SPEC §2)."""
    if not settings.DEBUG and settings.SECRET_KEY == settings.DEV_SECRET_KEY:
        raise ImproperlyConfigured("SECRET_KEY must be set when DEBUG=0 (the embedded key is for development only).")
