from django.urls import path

from tenants import api

urlpatterns = [
    path("organizations/create", api.OrganizationCreateView.as_view()),
    path("organizations/<str:organization_id>", api.OrganizationDetailView.as_view()),
    path("organizations/<str:organization_id>/teams", api.OrganizationTeamsView.as_view()),
    path("teams/create", api.TeamCreateView.as_view()),
    path("teams/<str:team_id>", api.TeamDetailView.as_view()),
    path("teams/<str:team_id>/suspend", api.TeamSuspendView.as_view()),
    path("teams/<str:team_id>/resume", api.TeamResumeView.as_view()),
    path("teams/<str:team_id>/keys", api.TeamKeysView.as_view()),
    path("teams/<str:team_id>/keys/<uuid:key_id>/revoke", api.TeamKeyRevokeView.as_view()),
]

from tenants import webhooks_api  # noqa: E402

urlpatterns += [
    path("webhooks", webhooks_api.WebhookListView.as_view()),
    path("webhooks/register", webhooks_api.WebhookRegisterView.as_view()),
    path("webhooks/<uuid:webhook_id>", webhooks_api.WebhookDetailView.as_view()),
    path("webhooks/<uuid:webhook_id>/deliveries", webhooks_api.WebhookDeliveriesView.as_view()),
]
