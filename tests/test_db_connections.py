"""Database connections under ASGI (saas_llm/db.py): a sync view's thread lives only as long as its
request, so its connection is closed when the request finishes instead of lingering until garbage
collection — one per request, until Postgres refuses new clients ("too many clients already")."""

import httpx
import pytest
from django.db import connection

from tests.conftest import make_tenant, needs_postgres_and_redis


def server_connections(database: str) -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()", [database]
        )
        return cursor.fetchone()[0]


@pytest.mark.live
@pytest.mark.django_db(transaction=True)
@needs_postgres_and_redis()
def test_sync_requests_leave_no_connection_behind(live_gateway):
    tenant = make_tenant("conn-team", "conn-org")
    database = connection.settings_dict["NAME"]
    with httpx.Client(base_url=live_gateway.url, timeout=10, trust_env=False) as client:
        headers = {"Authorization": f"Bearer {tenant.key}"}
        assert client.get("/api/jobs", headers=headers).status_code == 200  # both workers warm
        before = server_connections(database)
        for _ in range(60):  # sync DRF views: each runs in a thread made for its request
            assert client.get("/api/jobs", headers=headers).status_code == 200
        after = server_connections(database)

    # Before the fix, 60 requests left ~14 idle connections behind (the rest had been collected).
    assert after - before <= 2, (before, after)
