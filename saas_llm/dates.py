"""Date-range query parameters shared by list endpoints (SPEC §4)."""

from datetime import UTC, datetime, time, timedelta

from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime
from rest_framework import serializers

EARLIEST = datetime.min.replace(tzinfo=UTC)
LATEST = datetime.max.replace(tzinfo=UTC)


class DateOrDateTimeField(serializers.Field):
    """ISO date or datetime. With `end=True`, a bare date means the whole day (inclusive)."""

    default_error_messages = {"invalid": "must be an ISO-8601 date or datetime"}

    def __init__(self, *, end: bool = False, **kwargs):
        kwargs.setdefault("required", False)
        super().__init__(**kwargs)
        self.end = end

    def to_internal_value(self, data) -> datetime:
        if not isinstance(data, str) or not data.isascii():  # "٢٠٢٤-…" is not a date here
            self.fail("invalid")
        try:
            # A bare date first: parse_datetime() would read "2024-01-11" as midnight.
            day = parse_date(data) if len(data) == 10 else None
            moment = datetime.combine(day, time.min) if day else parse_datetime(data)
        except ValueError:
            self.fail("invalid")
        if moment is None:
            self.fail("invalid")
        if timezone.is_naive(moment):
            moment = moment.replace(tzinfo=UTC)
        try:
            # In UTC: Postgres holds offsets only up to ±15:59, Python's up to ±23:59.
            moment = moment.astimezone(UTC)
            if self.end:
                # An exclusive bound: the whole day given, or just past the instant given.
                moment += timedelta(days=1) if day else timedelta(microseconds=1)
        except OverflowError:
            # At the edge of the calendar (9999-12-31, or 0001-01-01 east of UTC): the edge itself.
            moment = LATEST if moment.year > 1 else EARLIEST
        return moment

    def to_representation(self, value):
        return value.isoformat()


def check_range(data: dict) -> dict:
    start, end = data.get("start_date"), data.get("end_date")
    if start and end and start >= end:
        raise serializers.ValidationError({"end_date": ["must be after start_date"]})
    return data
