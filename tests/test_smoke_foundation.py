def test_health_reports_database_and_cache(anon):
    response = anon.get("/health")
    assert response.status_code == 200
    assert response.json()["checks"] == {"database": "ok", "cache": "ok"}
    assert response["X-Request-Id"]


def test_team_get_with_own_key(acme):
    response = acme.api.get("/api/teams/acme-corp")
    assert response.status_code == 200
    assert response.json()["credits_remaining"] == 100.0
