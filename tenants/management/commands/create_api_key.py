from django.core.management.base import BaseCommand, CommandError

from saas_llm.errors import ApiError
from tenants import services
from tenants.selectors import get_team


class Command(BaseCommand):
    help = "Create an API key: --admin for an admin key, --team T for a team's virtual key. Prints it once."

    def add_arguments(self, parser):
        group = parser.add_mutually_exclusive_group(required=True)
        group.add_argument("--admin", action="store_true")
        group.add_argument("--team")
        parser.add_argument("--name", default="default")

    def handle(self, admin, team, name, **options):
        try:
            owner = None if admin else get_team(team)
        except ApiError as exc:
            raise CommandError(exc.detail) from None
        key, raw_key = services.issue_key(team=owner, name=name)
        kind = "admin key" if admin else f"key for team {team}"
        self.stdout.write(f"created {kind} {key.id} ({key.prefix}…)")
        self.stdout.write(raw_key)
