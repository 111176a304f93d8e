"""HTTP layer for webhooks (SPEC §5.7): team keys manage their own team's endpoints."""

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from saas_llm.api import StrictSerializer, parse_body, parse_query
from saas_llm.fields import SlugIdField, StrictCharField
from saas_llm.idempotency import one_time_secrets
from saas_llm.pagination import LimitOffsetPagination
from tenants import webhooks
from tenants.auth import acting_team, team_filter
from tenants.events import EVENT_TYPES
from tenants.models import DeliveryStatus, WebhookDelivery, WebhookEndpoint
from tenants.selectors import get_team


class WebhookIn(StrictSerializer):
    team_id = SlugIdField(required=False)
    webhook_url = serializers.URLField(max_length=2000)
    events = serializers.ListField(child=serializers.ChoiceField(choices=EVENT_TYPES), allow_empty=False, max_length=10)
    description = StrictCharField(max_length=500, required=False, allow_blank=True)

    def validate_webhook_url(self, value: str) -> str:
        try:
            webhooks.check_registration(value)
        except webhooks.UnsafeWebhookUrl as exc:
            raise serializers.ValidationError(exc.detail) from None
        return value

    def validate_events(self, value: list[str]) -> list[str]:
        return list(dict.fromkeys(value))


class WebhookListQuery(serializers.Serializer):
    team_id = SlugIdField(required=False)
    limit = serializers.CharField(required=False)
    offset = serializers.CharField(required=False)


class WebhookOut(serializers.Serializer):
    webhook_id = serializers.UUIDField(source="id")
    team_id = serializers.CharField()
    webhook_url = serializers.CharField(source="url")
    events = serializers.ListField(child=serializers.CharField())
    description = serializers.CharField()
    created_at = serializers.DateTimeField()


class WebhookCreatedOut(WebhookOut):
    secret = serializers.CharField(help_text="Signing secret (whsec_…). Shown only once.")


class WebhookListOut(serializers.Serializer):
    count = serializers.IntegerField()
    next = serializers.URLField(allow_null=True)
    previous = serializers.URLField(allow_null=True)
    results = WebhookOut(many=True)


class DeliveryOut(serializers.Serializer):
    delivery_id = serializers.UUIDField(source="id")
    event_id = serializers.UUIDField()
    event = serializers.CharField(source="event.type")
    status = serializers.ChoiceField(choices=DeliveryStatus.choices)
    attempts = serializers.IntegerField()
    last_status_code = serializers.IntegerField(allow_null=True)
    last_error = serializers.CharField()
    next_attempt_at = serializers.DateTimeField(allow_null=True)
    delivered_at = serializers.DateTimeField(allow_null=True)
    created_at = serializers.DateTimeField()


class DeliveryListOut(serializers.Serializer):
    count = serializers.IntegerField()
    next = serializers.URLField(allow_null=True)
    previous = serializers.URLField(allow_null=True)
    results = DeliveryOut(many=True)


def get_webhook(request: Request, webhook_id) -> WebhookEndpoint:
    """Scoped lookup: another team's (or a deleted) webhook is a 404."""
    endpoints = WebhookEndpoint.objects.filter(id=webhook_id, deleted_at__isnull=True)
    if not request.auth.is_admin:
        endpoints = endpoints.filter(team_id=request.auth.team.id)
    endpoint = endpoints.first()
    if endpoint is None:
        raise webhooks.WebhookNotFound()
    return endpoint


class WebhookRegisterView(APIView):
    @extend_schema(
        operation_id="webhooks_register", request=WebhookIn, responses={201: WebhookCreatedOut}, tags=["webhooks"]
    )
    def post(self, request: Request) -> Response:
        data = parse_body(WebhookIn, request)
        team = acting_team(request.auth, data.get("team_id"))
        endpoint = webhooks.register_webhook(
            team=team, url=data["webhook_url"], events=data["events"], description=data.get("description", "")
        )
        body = {**WebhookOut(endpoint).data, "secret": endpoint.secret}
        return one_time_secrets(Response(body, status=201), "secret")


class WebhookListView(APIView):
    @extend_schema(
        operation_id="webhooks_list",
        parameters=[OpenApiParameter("team_id", str), OpenApiParameter("limit", int), OpenApiParameter("offset", int)],
        responses={200: WebhookListOut},
        tags=["webhooks"],
    )
    def get(self, request: Request) -> Response:
        query = parse_query(WebhookListQuery, request)
        team_id = team_filter(request.auth, query.get("team_id"))
        endpoints = WebhookEndpoint.objects.filter(deleted_at__isnull=True).order_by("created_at", "id")
        if team_id:
            endpoints = endpoints.filter(team=get_team(team_id))
        paginator = LimitOffsetPagination()
        page = paginator.paginate_queryset(endpoints, request, view=self)
        return paginator.get_paginated_response(WebhookOut(page, many=True).data)


class WebhookDetailView(APIView):
    @extend_schema(operation_id="webhooks_retrieve", responses={200: WebhookOut}, tags=["webhooks"])
    def get(self, request: Request, webhook_id) -> Response:
        return Response(WebhookOut(get_webhook(request, webhook_id)).data)

    @extend_schema(operation_id="webhooks_delete", responses={204: None}, tags=["webhooks"])
    def delete(self, request: Request, webhook_id) -> Response:
        webhooks.delete_webhook(endpoint=get_webhook(request, webhook_id))
        return Response(status=204)


class WebhookDeliveriesView(APIView):
    @extend_schema(
        operation_id="webhooks_deliveries",
        parameters=[OpenApiParameter("limit", int), OpenApiParameter("offset", int)],
        responses={200: DeliveryListOut},
        tags=["webhooks"],
    )
    def get(self, request: Request, webhook_id) -> Response:
        endpoint = get_webhook(request, webhook_id)
        deliveries = (
            WebhookDelivery.objects.filter(endpoint=endpoint).select_related("event").order_by("-created_at", "id")
        )
        paginator = LimitOffsetPagination()
        page = paginator.paginate_queryset(deliveries, request, view=self)
        return paginator.get_paginated_response(DeliveryOut(page, many=True).data)
