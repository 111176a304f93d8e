import uuid

from django.core.management.base import BaseCommand, CommandError

from tenants import services
from tenants.models import ApiKey, hash_key


class Command(BaseCommand):
    help = "Revoke an API key, given its key id (UUID) or the full key."

    def add_arguments(self, parser):
        parser.add_argument("key")

    def handle(self, key, **options):
        lookup = {"key_hash": hash_key(key)} if key.startswith("sk-") else {"id": _uuid(key)}
        row = ApiKey.objects.filter(**lookup).first()
        if row is None:
            raise CommandError("no such API key")
        row = services.revoke_key(key=row)
        self.stdout.write(f"revoked {row.id} ({row.prefix}…) at {row.revoked_at.isoformat()}")


def _uuid(value: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise CommandError("expected a key id (UUID) or a full key starting with sk-") from None
