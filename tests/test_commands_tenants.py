"""Tenant management commands (SPEC §8), run through call_command."""

import io
import json
import re
import stat

import pytest
from django.core.management import CommandError, call_command

from billing.models import CreditAccount, LedgerEntry
from tenants.models import ApiKey, Organization, Team, TeamStatus, hash_key

KEY_RE = r"sk-[A-Za-z0-9_-]{32,}"


def run(*args: str) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


# --- create_organization --------------------------------------------------------------------------


def test_create_organization(db):
    output = run("create_organization", "initech", "--name", "Initech Inc.")
    assert output.strip() == "created organization initech"
    assert Organization.objects.get(id="initech").name == "Initech Inc."


def test_create_organization_name_defaults_to_id(db):
    run("create_organization", "hooli")
    assert Organization.objects.get(id="hooli").name == "hooli"


def test_create_organization_duplicate_is_an_error(acme):
    with pytest.raises(CommandError, match="Organization 'acme' already exists"):
        run("create_organization", "acme", "--name", "Other")
    assert Organization.objects.get(id="acme").name == "Acme"


# --- create_team ----------------------------------------------------------------------------------


def test_create_team_prints_the_key_once_and_stores_only_its_hash(db):
    run("create_organization", "initech")
    output = run("create_team", "initech-ops", "--organization", "initech", "--credits", "12.5", "--alias", "Ops")
    lines = output.strip().splitlines()
    assert lines[0] == "created team initech-ops"
    match = re.fullmatch(rf"virtual key \(shown once\): ({KEY_RE})", lines[1])
    assert match
    raw = match.group(1)

    team = Team.objects.get(id="initech-ops")
    assert team.organization_id == "initech"
    assert team.team_alias == "Ops"
    assert team.budget_mode == "job"
    key = ApiKey.objects.get(team=team)
    assert key.key_hash == hash_key(raw)
    assert raw not in [str(v) for v in ApiKey.objects.filter(pk=key.pk).values().get().values()]
    entry = LedgerEntry.objects.get(team=team)
    assert (entry.kind, entry.amount_units, entry.actor) == ("grant", 125_000, "manage.py")
    assert CreditAccount.objects.get(team=team).balance_units == 125_000


def test_create_team_with_budget_mode_and_no_credits(acme):
    run("create_team", "acme-tok", "--organization", "acme", "--budget-mode", "tokens")
    team = Team.objects.get(id="acme-tok")
    assert team.budget_mode == "tokens"
    assert not LedgerEntry.objects.filter(team=team).exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["Bad Id", "--organization", "acme"], "invalid team id 'Bad Id'"),
        (["acme-new", "--organization", "acme", "--credits", "-5"], "invalid --credits '-5'"),
        (["acme-new", "--organization", "acme", "--credits", "lots"], "invalid --credits 'lots'"),
        (["acme-new", "--organization", "acme", "--credits", "NaN"], "invalid --credits 'NaN'"),
        (["acme-new", "--organization", "nope"], "Organization 'nope' not found"),
        (["acme-new", "--organization", "acme", "--access-group", "nope"], "Access group 'nope' not found"),
        (["acme-new", "--organization", "acme", "--default-model", "nope"], "Model alias 'nope' not found"),
        (["acme-corp", "--organization", "acme"], "Team 'acme-corp' already exists"),
    ],
)
def test_create_team_errors(acme, args, message):
    keys_before = ApiKey.objects.count()
    with pytest.raises(CommandError, match=re.escape(message)):
        run("create_team", *args)
    assert not Team.objects.filter(id="acme-new").exists()
    assert ApiKey.objects.count() == keys_before


def test_create_team_rejects_credits_with_too_many_decimals(acme):
    with pytest.raises(CommandError):
        run("create_team", "acme-new", "--organization", "acme", "--credits", "1.00001")
    assert not Team.objects.filter(id="acme-new").exists()


# --- create_api_key -------------------------------------------------------------------------------


def test_create_admin_key(anon):
    output = run("create_api_key", "--admin", "--name", "ops")
    lines = output.strip().splitlines()
    raw = lines[-1]
    assert re.fullmatch(KEY_RE, raw)
    key = ApiKey.objects.get(key_hash=hash_key(raw))
    assert key.team_id is None
    assert key.name == "ops"
    assert lines[0] == f"created admin key {key.id} ({key.prefix}…)"
    # It works as an admin key.
    response = anon.client.post(
        "/api/organizations/create",
        json.dumps({"organization_id": "via-cli", "name": "CLI"}),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {raw}",
    )
    assert response.status_code == 201
    assert Organization.objects.filter(id="via-cli").exists()


def test_create_team_key(acme, globex, anon):
    output = run("create_api_key", "--team", "acme-corp")
    raw = output.strip().splitlines()[-1]
    key = ApiKey.objects.get(key_hash=hash_key(raw))
    assert key.team_id == "acme-corp"
    assert key.name == "default"
    assert "key for team acme-corp" in output
    assert anon.client.get("/api/teams/acme-corp", HTTP_AUTHORIZATION=f"Bearer {raw}").status_code == 200
    assert anon.client.get("/api/teams/globex-eng", HTTP_AUTHORIZATION=f"Bearer {raw}").status_code == 403


def test_create_api_key_for_unknown_team(db):
    with pytest.raises(CommandError, match="Team 'nope' not found"):
        run("create_api_key", "--team", "nope")
    assert ApiKey.objects.count() == 0


@pytest.mark.parametrize("args", [[], ["--admin", "--team", "acme-corp"]])
def test_create_api_key_needs_exactly_one_of_admin_or_team(acme, args):
    before = ApiKey.objects.count()
    with pytest.raises(CommandError):
        run("create_api_key", *args)
    assert ApiKey.objects.count() == before


# --- revoke_api_key -------------------------------------------------------------------------------


@pytest.mark.parametrize("by", ["id", "raw"])
def test_revoke_api_key(acme, by):
    key = ApiKey.objects.get(key_hash=hash_key(acme.key))
    output = run("revoke_api_key", str(key.id) if by == "id" else acme.key)
    key.refresh_from_db()
    assert key.revoked_at is not None
    assert output.strip() == f"revoked {key.id} ({key.prefix}…) at {key.revoked_at.isoformat()}"
    response = acme.api.get("/api/teams/acme-corp")
    assert response.status_code == 401
    assert response.json() == {"detail": "API key has been revoked"}


def test_revoke_api_key_twice_keeps_the_first_time(acme):
    key = ApiKey.objects.get(key_hash=hash_key(acme.key))
    run("revoke_api_key", str(key.id))
    key.refresh_from_db()
    first = key.revoked_at
    run("revoke_api_key", str(key.id))
    key.refresh_from_db()
    assert key.revoked_at == first


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("00000000-0000-0000-0000-000000000000", "no such API key"),
        ("sk-never-issued-never-issued-never-issued", "no such API key"),
        ("not-a-key", "expected a key id (UUID) or a full key starting with sk-"),
    ],
)
def test_revoke_api_key_errors(acme, value, message):
    with pytest.raises(CommandError, match=re.escape(message)):
        run("revoke_api_key", value)
    assert not ApiKey.objects.filter(revoked_at__isnull=False).exists()


# --- suspend_team / resume_team -------------------------------------------------------------------


def test_suspend_and_resume_team_are_idempotent(acme, globex):
    assert run("suspend_team", "acme-corp").strip() == "team acme-corp is suspended"
    assert run("suspend_team", "acme-corp").strip() == "team acme-corp is suspended"
    assert Team.objects.get(id="acme-corp").status == TeamStatus.SUSPENDED
    assert Team.objects.get(id="globex-eng").status == TeamStatus.ACTIVE

    assert run("resume_team", "acme-corp").strip() == "team acme-corp is active"
    assert run("resume_team", "acme-corp").strip() == "team acme-corp is active"
    assert Team.objects.get(id="acme-corp").status == TeamStatus.ACTIVE


@pytest.mark.parametrize("command", ["suspend_team", "resume_team"])
def test_team_status_commands_on_unknown_team(db, command):
    with pytest.raises(CommandError, match="Team 'nope' not found"):
        run(command, "nope")


# --- seed_demo ------------------------------------------------------------------------------------


def _seed(keys_file) -> dict[str, str]:
    output = run("seed_demo", "--keys-file", str(keys_file))
    assert "demo organization: acme   demo team: acme-corp" in output
    found = dict(re.findall(rf"^(ADMIN_KEY|TEAM_KEY)=({KEY_RE})$", output, flags=re.M))
    assert set(found) == {"ADMIN_KEY", "TEAM_KEY"}
    return found


def test_seed_demo_is_idempotent(db, tmp_path, anon):
    keys_file = tmp_path / "demo-keys.json"
    first = _seed(keys_file)
    second = _seed(keys_file)
    assert first == second

    assert Organization.objects.count() == 1 and Organization.objects.get().id == "acme"
    assert Team.objects.count() == 1 and Team.objects.get().id == "acme-corp"
    grants = LedgerEntry.objects.filter(team_id="acme-corp")
    assert grants.count() == 1
    assert grants.get().amount_units == 100 * 10_000
    assert CreditAccount.objects.get(team_id="acme-corp").balance_units == 100 * 10_000
    # Only the keys the first run made: the team's first key and one admin key.
    assert ApiKey.objects.filter(team_id="acme-corp").count() == 1
    assert ApiKey.objects.filter(team__isnull=True).count() == 1

    saved = json.loads(keys_file.read_text())
    assert saved == {"team_key": first["TEAM_KEY"], "admin_key": first["ADMIN_KEY"]}
    assert stat.S_IMODE(keys_file.stat().st_mode) == 0o600

    team = anon.client.get("/api/teams/acme-corp", HTTP_AUTHORIZATION=f"Bearer {first['TEAM_KEY']}")
    assert team.status_code == 200
    assert team.json()["credits_remaining"] == 100
    assert "markup_percent" not in team.json()
    org = anon.client.get("/api/organizations/acme", HTTP_AUTHORIZATION=f"Bearer {first['ADMIN_KEY']}")
    assert org.status_code == 200


def test_seed_demo_replaces_a_revoked_key(db, tmp_path, anon):
    keys_file = tmp_path / "demo-keys.json"
    first = _seed(keys_file)
    run("revoke_api_key", first["TEAM_KEY"])

    second = _seed(keys_file)
    assert second["ADMIN_KEY"] == first["ADMIN_KEY"]
    assert second["TEAM_KEY"] != first["TEAM_KEY"]
    assert ApiKey.objects.get(key_hash=hash_key(second["TEAM_KEY"])).team_id == "acme-corp"
    assert anon.client.get("/api/teams/acme-corp", HTTP_AUTHORIZATION=f"Bearer {second['TEAM_KEY']}").status_code == 200
    assert LedgerEntry.objects.filter(team_id="acme-corp").count() == 1


def test_seed_demo_with_a_lost_keys_file_issues_new_keys_but_no_new_credits(db, tmp_path):
    first = _seed(tmp_path / "one.json")
    second = _seed(tmp_path / "two.json")
    assert second["ADMIN_KEY"] != first["ADMIN_KEY"]
    assert second["TEAM_KEY"] != first["TEAM_KEY"]
    assert Team.objects.count() == 1
    assert CreditAccount.objects.get(team_id="acme-corp").balance_units == 100 * 10_000
