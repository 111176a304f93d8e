from django.apps import AppConfig


class Config(AppConfig):
    name = "billing"
    default_auto_field = "django.db.models.BigAutoField"
