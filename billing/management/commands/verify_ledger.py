from django.core.management.base import BaseCommand, CommandError

from billing.selectors import ledger_discrepancies


class Command(BaseCommand):
    help = "Prove balance == Σ ledger and reserved == Σ open reservations for every team; non-zero exit names the team."

    def handle(self, **options):
        problems = ledger_discrepancies()
        for problem in problems:
            self.stderr.write(problem)
        if problems:
            raise CommandError(f"ledger check failed for {len(problems)} team(s)")
        self.stdout.write("ledger OK")
