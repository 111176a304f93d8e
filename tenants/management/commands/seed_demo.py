"""Idempotent demo data for `make run`: organization `acme`, team `acme-corp` (100 credits), the model
alias `chat-fast` served by the local mock upstream (no provider key, no network) in access group
`standard`, an admin key and a team key.

Keys are stored hashed, so the raw demo keys are kept in a local file (DEMO_KEYS_FILE, gitignored)
to print them again on the next run; a key that was revoked or lost is replaced by a new one.
"""

import json
from decimal import Decimal
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand

from billing import services as billing_services
from models_registry import services as registry_services
from models_registry.models import AccessGroup, ModelAlias
from tenants import services
from tenants.models import ApiKey, Organization, Team, hash_key

DEMO_ORG = "acme"
DEMO_TEAM = "acme-corp"
DEMO_CREDITS = Decimal(100)
DEMO_ALIAS = "chat-fast"
DEMO_GROUP = "standard"


class Command(BaseCommand):
    help = "Create (or reuse) the demo organization, team and keys, and print the keys."

    def add_arguments(self, parser):
        parser.add_argument("--keys-file", default=str(Path(settings.BASE_DIR) / ".demo-keys.json"))
        parser.add_argument("--mock-port", type=int, default=8100, help="port of `manage.py mock_llm_server`")

    def handle(self, keys_file, mock_port, **options):
        _seed_registry(mock_port)
        path = Path(keys_file)
        saved = json.loads(path.read_text()) if path.exists() else {}
        if not Organization.objects.filter(id=DEMO_ORG).exists():
            services.create_organization(organization_id=DEMO_ORG, name="Acme Inc. (demo)")
        team = Team.objects.filter(id=DEMO_TEAM).first()
        if team is None:
            team, raw = services.create_team(
                team_id=DEMO_TEAM,
                organization_id=DEMO_ORG,
                team_alias="Acme demo team",
                key_name="demo",
                actor="seed_demo",
            )
            saved["team_key"] = raw
        billing_services.grant_credits(
            team=team, amount=DEMO_CREDITS, reason="demo credits", actor="seed_demo", reference="seed-demo:acme-corp"
        )
        if not team.access_groups.filter(name=DEMO_GROUP).exists() or team.default_model_id is None:
            services.update_team(
                team=team,
                access_groups=sorted({DEMO_GROUP, *team.access_groups.values_list("name", flat=True)}),
                default_model=team.default_model_id or DEMO_ALIAS,
            )
        if not _usable(saved.get("team_key")):
            saved["team_key"] = services.issue_key(team=team, name="demo")[1]
        if not _usable(saved.get("admin_key")):
            saved["admin_key"] = services.issue_key(team=None, name="demo-admin")[1]
        path.write_text(json.dumps(saved, indent=2))
        path.chmod(0o600)
        self.stdout.write(f"demo organization: {DEMO_ORG}   demo team: {DEMO_TEAM}   demo model: {DEMO_ALIAS}")
        self.stdout.write(f"ADMIN_KEY={saved['admin_key']}")
        self.stdout.write(f"TEAM_KEY={saved['team_key']}")


def _usable(raw_key: str | None) -> bool:
    if not raw_key:
        return False
    key = ApiKey.objects.filter(key_hash=hash_key(raw_key)).first()
    return key is not None and key.is_usable()


def _seed_registry(mock_port: int) -> None:
    if not ModelAlias.objects.filter(name=DEMO_ALIAS).exists():
        registry_services.create_alias(
            alias_name=DEMO_ALIAS,
            display_name="Fast chat (demo, local mock upstream)",
            deployments=[
                {
                    "litellm_model": "openai/demo-model",
                    "api_base": f"http://127.0.0.1:{mock_port}/v1",
                    "priority": 0,
                    "timeout_s": 30.0,
                    # Demo prices (USD per token), so costs and usd-mode charges are visible.
                    "input_cost_per_token": Decimal("0.00000015"),
                    "output_cost_per_token": Decimal("0.0000006"),
                }
            ],
        )
    if not AccessGroup.objects.filter(name=DEMO_GROUP).exists():
        registry_services.create_access_group(
            group_name=DEMO_GROUP, model_aliases=[DEMO_ALIAS], display_name="Standard models"
        )
