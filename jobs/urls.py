from django.urls import path

from jobs import api, views_llm

urlpatterns = [
    path("jobs", api.JobListView.as_view()),
    path("jobs/create", api.JobCreateView.as_view()),
    path("jobs/<str:job_id>", api.JobDetailView.as_view()),
    path("jobs/<str:job_id>/complete", api.JobCompleteView.as_view()),
    path("jobs/<str:job_id>/costs", api.JobCostsView.as_view()),
    path("jobs/<str:job_id>/llm-call", views_llm.LLMCallView.as_view()),
    path("jobs/<str:job_id>/llm-call-stream", views_llm.LLMCallStreamView.as_view()),
]
