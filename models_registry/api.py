"""HTTP layer for the model registry (SPEC §5.6)."""

from decimal import Decimal

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from models_registry import services
from models_registry.credentials import validate_api_key_reference
from models_registry.errors import AliasNotFound
from models_registry.models import AccessGroup, ModelAlias, Status
from models_registry.router import is_routable
from models_registry.selectors import (
    get_access_group,
    get_alias_with_deployments,
    list_aliases,
    list_allowed_aliases,
)
from models_registry.sql import team_may_use
from saas_llm.api import StrictSerializer, parse_body
from saas_llm.fields import ExactDecimalField, SlugIdField, StrictCharField, StrictFloatField, StrictIntegerField
from saas_llm.pagination import LimitOffsetPagination
from tenants.auth import IsAdminKey


class ApiKeyReferenceField(StrictCharField):
    """`os.environ/NAME` of a provider key variable (models_registry.credentials)."""

    def __init__(self, **kwargs):
        super().__init__(max_length=200, validators=[validate_api_key_reference], **kwargs)


class PriceField(ExactDecimalField):
    """USD per token: below 1, at most 15 decimals — exact even where the database keeps a double."""

    def __init__(self, **kwargs):
        super().__init__(max_digits=15, decimal_places=15, min_value=Decimal(0), coerce_to_string=False, **kwargs)


class DeploymentIn(StrictSerializer):
    litellm_model = StrictCharField(max_length=200)
    api_base = serializers.URLField(max_length=500, required=False, allow_null=True, allow_blank=True)
    api_key = ApiKeyReferenceField(required=False, allow_null=True, allow_blank=True)
    priority = StrictIntegerField(required=False, min_value=0, max_value=100)
    weight = StrictIntegerField(required=False, min_value=1, max_value=1_000_000)
    timeout_s = StrictFloatField(required=False, min_value=0.1, max_value=3600)
    input_cost_per_token = PriceField(required=False, allow_null=True)
    output_cost_per_token = PriceField(required=False, allow_null=True)

    def validate_litellm_model(self, value: str) -> str:
        value = value.strip()
        if not is_routable(value):
            raise serializers.ValidationError(
                "must be a litellm model string with a known provider, such as 'openai/gpt-4o-mini'"
            )
        return value

    def validate(self, data):
        for name in ("api_base", "api_key"):
            if data.get(name) is None and name in data:
                data[name] = ""
        return data


class AliasFieldsIn(StrictSerializer):
    display_name = StrictCharField(max_length=200, required=False, allow_blank=True)
    description = StrictCharField(max_length=2000, required=False, allow_blank=True)
    status = serializers.ChoiceField(choices=Status.choices, required=False)
    access_groups = serializers.ListField(child=SlugIdField(), required=False, max_length=100)
    deployments = DeploymentIn(many=True, required=False, allow_empty=False, max_length=50)


class AliasCreateIn(AliasFieldsIn):
    alias_name = SlugIdField()
    deployments = DeploymentIn(many=True, allow_empty=False, max_length=50)


class DeploymentOut(serializers.Serializer):
    litellm_model = serializers.CharField()
    api_base = serializers.CharField(allow_null=True)
    api_key = serializers.CharField(allow_null=True)
    priority = serializers.IntegerField()
    weight = serializers.IntegerField()
    timeout_s = serializers.FloatField()
    input_cost_per_token = PriceField(allow_null=True)
    output_cost_per_token = PriceField(allow_null=True)


class AliasPublicOut(serializers.Serializer):
    alias_name = serializers.CharField(source="name")
    display_name = serializers.CharField()
    description = serializers.CharField()
    status = serializers.ChoiceField(choices=Status.choices)


class AliasOut(AliasPublicOut):
    access_groups = serializers.SerializerMethodField()
    deployments = DeploymentOut(many=True, source="deployments.all")
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()

    def get_access_groups(self, alias: ModelAlias) -> list[str]:
        return sorted(group.name for group in alias.access_groups.all())


class AliasViewOut(AliasPublicOut):
    """What GET returns: everything for admin keys; team keys get only the public fields."""

    access_groups = serializers.ListField(child=serializers.CharField(), required=False, help_text="Admin keys only.")
    deployments = DeploymentOut(many=True, required=False, help_text="Admin keys only.")
    created_at = serializers.DateTimeField(required=False, help_text="Admin keys only.")
    updated_at = serializers.DateTimeField(required=False, help_text="Admin keys only.")


class AliasListOut(serializers.Serializer):
    count = serializers.IntegerField()
    next = serializers.URLField(allow_null=True)
    previous = serializers.URLField(allow_null=True)
    results = AliasViewOut(many=True)


class GroupFieldsIn(StrictSerializer):
    display_name = StrictCharField(max_length=200, required=False, allow_blank=True)
    description = StrictCharField(max_length=2000, required=False, allow_blank=True)
    status = serializers.ChoiceField(choices=Status.choices, required=False)
    model_aliases = serializers.ListField(child=SlugIdField(), required=False, max_length=500)


class GroupCreateIn(GroupFieldsIn):
    group_name = SlugIdField()


class GroupOut(serializers.Serializer):
    group_name = serializers.CharField(source="name")
    display_name = serializers.CharField()
    description = serializers.CharField()
    status = serializers.ChoiceField(choices=Status.choices)
    model_aliases = serializers.SerializerMethodField()
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()

    def get_model_aliases(self, group: AccessGroup) -> list[str]:
        return sorted(alias.name for alias in group.aliases.all())


class AliasCreateView(APIView):
    permission_classes = [IsAdminKey]

    @extend_schema(
        operation_id="model_aliases_create", request=AliasCreateIn, responses={201: AliasOut}, tags=["models"]
    )
    def post(self, request: Request) -> Response:
        data = dict(parse_body(AliasCreateIn, request))
        alias = services.create_alias(
            alias_name=data.pop("alias_name"),
            deployments=[dict(d) for d in data.pop("deployments")],
            access_groups=data.pop("access_groups", None),
            **data,
        )
        return Response(AliasOut(get_alias_with_deployments(alias.name)).data, status=201)


class AliasListView(APIView):
    @extend_schema(operation_id="model_aliases_list", responses={200: AliasListOut}, tags=["models"])
    def get(self, request: Request) -> Response:
        paginator = LimitOffsetPagination()
        if request.auth.is_admin:
            page = paginator.paginate_queryset(list_aliases(), request, view=self)
            return paginator.get_paginated_response(AliasOut(page, many=True).data)
        page = paginator.paginate_queryset(list_allowed_aliases(request.auth.team.id), request, view=self)
        return paginator.get_paginated_response(AliasPublicOut(page, many=True).data)


class AliasDetailView(APIView):
    def get_permissions(self):
        return [IsAdminKey()] if self.request.method == "PUT" else super().get_permissions()

    @extend_schema(operation_id="model_aliases_retrieve", responses={200: AliasViewOut}, tags=["models"])
    def get(self, request: Request, alias_name: str) -> Response:
        if request.auth.is_admin:
            return Response(AliasOut(get_alias_with_deployments(alias_name)).data)
        # Team keys see only aliases they may call, and never deployments, prices or providers.
        if not team_may_use(request.auth.team.id, alias_name):
            raise AliasNotFound(alias_name)
        return Response(AliasPublicOut(get_alias_with_deployments(alias_name)).data)

    @extend_schema(
        operation_id="model_aliases_update", request=AliasFieldsIn, responses={200: AliasOut}, tags=["models"]
    )
    def put(self, request: Request, alias_name: str) -> Response:
        alias = get_alias_with_deployments(alias_name)
        data = dict(parse_body(AliasFieldsIn, request))
        deployments = data.pop("deployments", None)
        services.update_alias(
            alias=alias,
            deployments=[dict(d) for d in deployments] if deployments is not None else None,
            access_groups=data.pop("access_groups", None),
            **data,
        )
        return Response(AliasOut(get_alias_with_deployments(alias_name)).data)


class GroupCreateView(APIView):
    permission_classes = [IsAdminKey]

    @extend_schema(
        operation_id="model_access_groups_create", request=GroupCreateIn, responses={201: GroupOut}, tags=["models"]
    )
    def post(self, request: Request) -> Response:
        data = dict(parse_body(GroupCreateIn, request))
        group = services.create_access_group(
            group_name=data.pop("group_name"), model_aliases=data.pop("model_aliases", None), **data
        )
        return Response(GroupOut(get_access_group(group.name)).data, status=201)


class GroupDetailView(APIView):
    permission_classes = [IsAdminKey]

    @extend_schema(operation_id="model_access_groups_retrieve", responses={200: GroupOut}, tags=["models"])
    def get(self, request: Request, group_name: str) -> Response:
        return Response(GroupOut(get_access_group(group_name)).data)

    @extend_schema(
        operation_id="model_access_groups_update", request=GroupFieldsIn, responses={200: GroupOut}, tags=["models"]
    )
    def put(self, request: Request, group_name: str) -> Response:
        group = get_access_group(group_name)
        data = dict(parse_body(GroupFieldsIn, request))
        services.update_access_group(group=group, model_aliases=data.pop("model_aliases", None), **data)
        return Response(GroupOut(get_access_group(group_name)).data)
