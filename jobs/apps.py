from django.apps import AppConfig


class Config(AppConfig):
    name = "jobs"
    default_auto_field = "django.db.models.BigAutoField"
