from django.core.management.base import BaseCommand, CommandError

from billing.selectors import ledger_discrepancies


class Command(BaseCommand):
    help = "Prove balance == Σ ledger and reserved == Σ open reservations for every team; non-zero exit names the team."

    def handle(self, **options):
        problems = ledger_discrepancies()
        for problem in problems:
            self.stderr.write(problem)
        if problems:
            # Each problem starts with "<team_id>:"; name the teams, not the number of problems.
            teams = sorted({problem.split(":", 1)[0] for problem in problems})
            raise CommandError(f"ledger check failed for {len(teams)} team(s): {', '.join(teams)}")
        self.stdout.write("ledger OK")
