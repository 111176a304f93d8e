from django.core.management.base import BaseCommand, CommandError

from saas_llm.errors import ApiError
from tenants import services
from tenants.models import TeamStatus
from tenants.selectors import get_team


class TeamStatusCommand(BaseCommand):
    target_status: TeamStatus

    def add_arguments(self, parser):
        parser.add_argument("team_id")

    def handle(self, team_id, **options):
        try:
            team = services.set_team_status(team=get_team(team_id), status=self.target_status)
        except ApiError as exc:
            raise CommandError(exc.detail) from None
        self.stdout.write(f"team {team.id} is {team.status}")
