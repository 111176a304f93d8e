from django.apps import AppConfig


class Config(AppConfig):
    name = "models_registry"
    default_auto_field = "django.db.models.BigAutoField"
