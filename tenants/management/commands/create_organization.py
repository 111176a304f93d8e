from django.core.management.base import BaseCommand, CommandError

from saas_llm.errors import ApiError
from tenants import services


class Command(BaseCommand):
    help = "Create an organization."

    def add_arguments(self, parser):
        parser.add_argument("organization_id")
        parser.add_argument("--name", default="")

    def handle(self, organization_id, name, **options):
        try:
            org = services.create_organization(organization_id=organization_id, name=name or organization_id)
        except ApiError as exc:
            raise CommandError(exc.detail) from None
        self.stdout.write(f"created organization {org.id}")
