from django.urls import path

from jobs import api, usage_api, views_llm

urlpatterns = [
    path("jobs", api.JobListView.as_view()),
    path("jobs/create", api.JobCreateView.as_view()),
    path("jobs/<str:job_id>", api.JobDetailView.as_view()),
    path("jobs/<str:job_id>/complete", api.JobCompleteView.as_view()),
    path("jobs/<str:job_id>/costs", api.JobCostsView.as_view()),
    path("jobs/<str:job_id>/llm-call", views_llm.LLMCallView.as_view()),
    path("jobs/<str:job_id>/llm-call-stream", views_llm.LLMCallStreamView.as_view()),
    path("teams/<str:team_id>/usage", usage_api.TeamUsageView.as_view()),
    path("organizations/<str:organization_id>/usage", usage_api.OrganizationUsageView.as_view()),
]
