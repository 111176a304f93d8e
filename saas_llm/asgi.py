import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "saas_llm.settings")

django_application = get_asgi_application()

# The hot LLM routes bypass Django's handler and its sync middlewares (saas_llm/lean.py).
from saas_llm.lean import LeanDispatch  # noqa: E402

application = LeanDispatch(django_application)

from saas_llm.checks import refuse_insecure_secret_key  # noqa: E402

refuse_insecure_secret_key()

# Load litellm at boot, not inside the first LLM call: importing it, its Router and its tokenizer
# takes seconds of CPU that would otherwise block the event loop of the first request.
from saas_llm.warmup import warm_up_litellm  # noqa: E402

warm_up_litellm()

# Calls the database could not record (it was down) wait on disk: record them now and whenever
# more arrive (jobs/spool.py).
from jobs.spool import start_replayer  # noqa: E402

start_replayer()
