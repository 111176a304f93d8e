import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "saas_llm.settings")

application = get_asgi_application()

from saas_llm.checks import refuse_insecure_secret_key  # noqa: E402

refuse_insecure_secret_key()

# Import litellm at boot (it takes seconds), not inside the first LLM call.
import litellm  # noqa: E402, F401
