from decimal import Decimal, InvalidOperation

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from saas_llm.errors import ApiError
from saas_llm.slugs import slug_validator
from tenants import services


class Command(BaseCommand):
    help = "Create a team and print its first virtual key (shown once)."

    def add_arguments(self, parser):
        parser.add_argument("team_id")
        parser.add_argument("--organization", required=True)
        parser.add_argument("--alias", default="")
        parser.add_argument("--access-group", action="append", default=[], dest="access_groups")
        parser.add_argument("--default-model")
        parser.add_argument("--credits", default="0")
        parser.add_argument("--budget-mode", choices=["job", "usd", "tokens"], default="job")

    def handle(self, team_id, organization, alias, access_groups, default_model, credits, budget_mode, **options):
        try:
            slug_validator(team_id)
            amount = Decimal(credits)
            if not amount.is_finite() or amount < 0:
                raise InvalidOperation
        except ValidationError:
            raise CommandError(f"invalid team id {team_id!r}: must match [a-z0-9][a-z0-9_.-]{{0,63}}") from None
        except InvalidOperation:
            raise CommandError(f"invalid --credits {credits!r}: must be a non-negative number") from None
        try:
            team, raw_key = services.create_team(
                team_id=team_id,
                organization_id=organization,
                team_alias=alias,
                access_groups=access_groups,
                default_model=default_model,
                credits_allocated=amount,
                budget_mode=budget_mode,
                actor="manage.py",
            )
        except (ApiError, ValueError) as exc:
            raise CommandError(getattr(exc, "detail", str(exc))) from None
        self.stdout.write(f"created team {team.id}")
        self.stdout.write(f"virtual key (shown once): {raw_key}")
