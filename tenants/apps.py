from django.apps import AppConfig


class Config(AppConfig):
    name = "tenants"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        import saas_llm.schema  # noqa: F401  (registers the bearer scheme with drf-spectacular)
