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
