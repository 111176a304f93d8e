from decimal import Decimal, InvalidOperation

from django.core.management.base import BaseCommand, CommandError

from billing import money, services
from saas_llm.errors import ApiError
from tenants.selectors import get_team


class Command(BaseCommand):
    help = "Add credits to a team (a ledger entry with the given reason)."

    def add_arguments(self, parser):
        parser.add_argument("team_id")
        parser.add_argument("amount")
        parser.add_argument("--reason", default="")
        parser.add_argument("--kind", choices=["grant", "purchase", "refund"], default="grant")

    def handle(self, team_id, amount, reason, kind, **options):
        try:
            value = Decimal(amount)
            units = money.credits_to_units(value)
        except (InvalidOperation, money.AmountError):
            raise CommandError(f"invalid amount {amount!r}: a positive number with at most 4 decimal places") from None
        if units <= 0 or value > money.MAX_CREDITS:
            raise CommandError("amount must be > 0 and ≤ 10^9")
        try:
            team = get_team(team_id)
        except ApiError as exc:
            raise CommandError(exc.detail) from None
        entry = services.grant_credits(team=team, amount=value, kind=kind, reason=reason, actor="manage.py")
        self.stdout.write(
            f"added {value} credits to {team.id}; balance {money.units_to_credits(entry.balance_after_units)}"
        )
