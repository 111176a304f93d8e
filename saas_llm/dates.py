"""Date-range query parameters shared by list endpoints (SPEC §4)."""

from datetime import UTC, datetime, time, timedelta

from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime
from rest_framework import serializers


class DateOrDateTimeField(serializers.Field):
    """ISO date or datetime. With `end=True`, a bare date means the whole day (inclusive)."""

    default_error_messages = {"invalid": "must be an ISO-8601 date or datetime"}

    def __init__(self, *, end: bool = False, **kwargs):
        kwargs.setdefault("required", False)
        super().__init__(**kwargs)
        self.end = end

    def to_internal_value(self, data) -> datetime:
        if not isinstance(data, str):
            self.fail("invalid")
        try:
            # A bare date first: parse_datetime() would read "2024-01-11" as midnight.
            day = parse_date(data) if len(data) == 10 else None
            moment = datetime.combine(day, time.min) if day else parse_datetime(data)
            if moment is None:
                self.fail("invalid")
            if day and self.end:
                moment += timedelta(days=1)
            elif self.end:
                # An exclusive bound that includes the instant given.
                moment += timedelta(microseconds=1)
        except ValueError:
            self.fail("invalid")
        if timezone.is_naive(moment):
            moment = timezone.make_aware(moment, UTC)
        return moment

    def to_representation(self, value):
        return value.isoformat()


def check_range(data: dict) -> dict:
    start, end = data.get("start_date"), data.get("end_date")
    if start and end and start >= end:
        raise serializers.ValidationError({"end_date": ["must be after start_date"]})
    return data
