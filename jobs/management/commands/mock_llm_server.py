"""`manage.py mock_llm_server`: serve the OpenAI-compatible mock upstream (jobs.mock_upstream) with uvicorn.

No database and no system checks: it only needs the ASGI app. Knobs can also be changed at runtime
through `POST /_control` (see jobs/mock_upstream.py).
"""

from django.core.management.base import BaseCommand, CommandError

from jobs import mock_upstream


class Command(BaseCommand):
    help = "Run the mock LLM upstream (OpenAI-compatible, fault injection) on --host/--port with uvicorn."
    requires_system_checks: list = []
    requires_migrations_checks = False

    def add_arguments(self, parser):
        mock_upstream.add_cli_arguments(parser)

    def handle(self, *args, **options):
        try:
            config = mock_upstream.config_from_options(options)
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(f"mock LLM upstream on http://{options['host']}:{options['port']}/v1 ({config})")
        self.stdout.flush()
        mock_upstream.serve(options["host"], options["port"], config)
