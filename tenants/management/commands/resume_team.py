from tenants.management.team_status import TeamStatusCommand
from tenants.models import TeamStatus


class Command(TeamStatusCommand):
    help = "Resume a suspended team. Idempotent."
    target_status = TeamStatus.ACTIVE
