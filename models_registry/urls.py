from django.urls import path

from models_registry import api

urlpatterns = [
    path("model-aliases", api.AliasListView.as_view()),
    path("model-aliases/create", api.AliasCreateView.as_view()),
    path("model-aliases/<str:alias_name>", api.AliasDetailView.as_view()),
    path("model-access-groups/create", api.GroupCreateView.as_view()),
    path("model-access-groups/<str:group_name>", api.GroupDetailView.as_view()),
]
