"""Django admin for the model registry (SPEC §5.6, §8): the same rules as the API, and every change
reaches the workers' routing (registry version)."""

import pytest

from models_registry.models import Deployment, ModelAlias, RegistryVersion
from models_registry.services import create_alias


def version() -> int:
    return RegistryVersion.objects.filter(pk=1).values_list("version", flat=True).first() or 0


def alias_form(name: str, *deployments: dict, initial: int = 0) -> dict:
    data = {
        "name": name,
        "display_name": "",
        "description": "",
        "status": "active",
        "deployments-TOTAL_FORMS": str(len(deployments)),
        "deployments-INITIAL_FORMS": str(initial),
        "deployments-MIN_NUM_FORMS": "0",
        "deployments-MAX_NUM_FORMS": "1000",
    }
    for index, deployment in enumerate(deployments):
        row = {"priority": "0", "position": str(index), "weight": "1", "timeout_s": "60", "api_base": "", "api_key": ""}
        row.update(deployment)
        data.update({f"deployments-{index}-{field}": value for field, value in row.items()})
    return data


@pytest.mark.parametrize(
    ("api_key", "message"),
    [
        ("sk-live-0123456789abcdefghijklmnop", "literal secrets are never stored"),  # was stored as given
        ("os.environ/DATABASE_URL", "DATABASE_URL is not a provider key variable"),
        ("os.environ/SECRET_KEY", "SECRET_KEY is not a provider key variable"),
    ],
)
def test_admin_refuses_a_literal_secret_or_a_server_setting_as_api_key(staff, api_key, message):
    form = alias_form("chat-admin", {"litellm_model": "openai/gpt-4o-mini", "api_key": api_key})

    response = staff.post("/admin/models_registry/modelalias/add/", form)

    assert response.status_code == 200  # the form again, with the error
    assert message in response.content.decode()
    assert not ModelAlias.objects.exists() and not Deployment.all_objects.exists()


def test_admin_saves_a_provider_key_reference(staff):
    form = alias_form("chat-admin", {"litellm_model": "openai/gpt-4o-mini", "api_key": "os.environ/OPENAI_API_KEY"})

    response = staff.post("/admin/models_registry/modelalias/add/", form)

    assert response.status_code == 302, response.content.decode()[:2000]
    assert Deployment.objects.get().api_key == "os.environ/OPENAI_API_KEY"


def test_bulk_delete_in_the_admin_bumps_the_registry_version(staff):
    """Found in a code read: "delete selected" did not bump the version, so workers kept routing."""
    for name in ("chat-a", "chat-b"):
        create_alias(alias_name=name, deployments=[{"litellm_model": "openai/gpt-4o-mini"}])
    before = version()

    response = staff.post(
        "/admin/models_registry/modelalias/",
        {"action": "delete_selected", "_selected_action": ["chat-a", "chat-b"], "post": "yes"},
        follow=True,
    )

    assert response.status_code == 200
    assert not ModelAlias.objects.exists()
    assert version() > before


def test_a_deployment_removed_in_the_admin_is_retired_not_deleted(staff):
    alias = create_alias(
        alias_name="chat-a", deployments=[{"litellm_model": "openai/gpt-4o-mini"}, {"litellm_model": "openai/gpt-4o"}]
    )
    first, second = alias.deployments.order_by("position")
    form = alias_form(
        "chat-a",
        {"id": str(first.pk), "alias": "chat-a", "litellm_model": "openai/gpt-4o-mini"},
        {"id": str(second.pk), "alias": "chat-a", "litellm_model": "openai/gpt-4o", "position": "1", "DELETE": "on"},
        initial=2,
    )
    before = version()

    response = staff.post("/admin/models_registry/modelalias/chat-a/change/", form)

    assert response.status_code == 302, response.content.decode()[:3000]
    assert list(Deployment.objects.values_list("pk", flat=True)) == [first.pk]
    assert Deployment.all_objects.get(pk=second.pk).retired_at is not None
    assert version() > before
