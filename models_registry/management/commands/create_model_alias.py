from django.core.management.base import BaseCommand, CommandError

from models_registry import services
from models_registry.api import AliasCreateIn
from saas_llm.errors import ApiError

# Options given as text that the API takes as JSON numbers.
NUMERIC_OPTIONS = {"priority": int, "weight": int, "timeout_s": float}


class Command(BaseCommand):
    help = "Create a model alias with one or more deployments (--deployment MODEL[,api_base=URL][,priority=N][,api_key=os.environ/NAME])."

    def add_arguments(self, parser):
        parser.add_argument("alias_name")
        parser.add_argument("--deployment", action="append", required=True, dest="deployments")
        parser.add_argument("--display-name", default="")
        parser.add_argument("--access-group", action="append", default=[], dest="access_groups")

    def handle(self, alias_name, deployments, display_name, access_groups, **options):
        payload = {
            "alias_name": alias_name,
            "display_name": display_name,
            "access_groups": access_groups,
            "deployments": [_parse_deployment(spec) for spec in deployments],
        }
        serializer = AliasCreateIn(data=payload)
        if not serializer.is_valid():
            raise CommandError(f"invalid alias: {serializer.errors}")
        data = dict(serializer.validated_data)
        try:
            alias = services.create_alias(
                alias_name=data.pop("alias_name"),
                deployments=[dict(d) for d in data.pop("deployments")],
                access_groups=data.pop("access_groups", None),
                **data,
            )
        except ApiError as exc:
            raise CommandError(exc.detail) from None
        self.stdout.write(f"created model alias {alias.name} with {len(deployments)} deployment(s)")


def _parse_deployment(spec: str) -> dict:
    model, *options = spec.split(",")
    deployment: dict = {"litellm_model": model.strip()}
    for option in options:
        name, sep, value = option.partition("=")
        if not sep:
            raise CommandError(f"bad deployment option {option!r}: expected name=value")
        name, value = name.strip(), value.strip()
        try:
            deployment[name] = NUMERIC_OPTIONS[name](value) if name in NUMERIC_OPTIONS else value
        except ValueError:
            raise CommandError(f"bad deployment option {option!r}: {name} must be a number") from None
    return deployment
