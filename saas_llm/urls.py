from django.contrib import admin
from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularJSONAPIView, SpectacularRedocView, SpectacularSwaggerView

from jobs import insights, openai_compat
from saas_llm import api

api_patterns = [
    path("", include("tenants.urls")),
    path("", include("billing.urls")),
    path("", include("models_registry.urls")),
    path("", include("jobs.urls")),
]

urlpatterns = [
    path("health", api.HealthView.as_view()),
    path(
        "openapi.json", SpectacularJSONAPIView.as_view(authentication_classes=[], permission_classes=[]), name="schema"
    ),
    path("docs", SpectacularSwaggerView.as_view(url_name="schema", authentication_classes=[], permission_classes=[])),
    path("redoc", SpectacularRedocView.as_view(url_name="schema", authentication_classes=[], permission_classes=[])),
    path("admin/insights/", insights.insights, name="admin-insights"),
    path("admin/", admin.site.urls),
    # Every /api/ route is also served at /api/v1/ (same handlers).
    path("api/v1/", include(api_patterns)),
    path("api/", include(api_patterns)),
    # OpenAI-compatible surface for the official SDKs (base_url=http://host:8003/v1).
    path("v1/chat/completions", openai_compat.ChatCompletionsView.as_view()),
    path("v1/models", openai_compat.ModelsView.as_view()),
    # Anything else is a JSON 404, whatever DEBUG says.
    re_path(r"^(?!admin/|static/).*$", api.not_found),
]

handler400 = "saas_llm.api.bad_request"
handler403 = "saas_llm.api.permission_denied"
handler404 = "saas_llm.api.not_found"
handler500 = "saas_llm.api.server_error"
