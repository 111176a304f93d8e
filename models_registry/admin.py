from django.contrib import admin

from models_registry.models import AccessGroup, ModelAlias


@admin.register(ModelAlias)
class ModelAliasAdmin(admin.ModelAdmin):
    list_display = ("name", "display_name", "status", "updated_at")
    list_filter = ("status",)
    search_fields = ("name", "display_name")


@admin.register(AccessGroup)
class AccessGroupAdmin(admin.ModelAdmin):
    list_display = ("name", "display_name", "status", "updated_at")
    list_filter = ("status",)
    search_fields = ("name", "display_name")
    filter_horizontal = ("aliases",)
