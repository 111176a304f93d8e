from django.core.management.base import BaseCommand, CommandError

from models_registry import services
from saas_llm.errors import ApiError
from saas_llm.slugs import slug_validator


class Command(BaseCommand):
    help = "Create a model access group containing the given aliases."

    def add_arguments(self, parser):
        parser.add_argument("group_name")
        parser.add_argument("--alias", action="append", default=[], dest="aliases")
        parser.add_argument("--display-name", default="")

    def handle(self, group_name, aliases, display_name, **options):
        from django.core.exceptions import ValidationError

        try:
            slug_validator(group_name)
        except ValidationError:
            raise CommandError(f"invalid group name {group_name!r}") from None
        try:
            group = services.create_access_group(
                group_name=group_name, model_aliases=aliases, display_name=display_name
            )
        except ApiError as exc:
            raise CommandError(exc.detail) from None
        self.stdout.write(f"created access group {group.name} with {len(aliases)} alias(es)")
