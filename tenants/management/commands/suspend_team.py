from tenants.management.team_status import TeamStatusCommand
from tenants.models import TeamStatus


class Command(TeamStatusCommand):
    help = "Suspend a team (no new jobs or LLM calls). Idempotent."
    target_status = TeamStatus.SUSPENDED
