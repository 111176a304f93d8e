import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "saas_llm.settings")

app = Celery("saas_llm")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
