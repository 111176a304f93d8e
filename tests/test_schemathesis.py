"""Schemathesis fuzzing of the live API against its own /openapi.json (SPEC §4: never a 5xx for bad input;
every response as documented).

For each credential kind (a team key, an admin key) a fresh stack is started as real processes on
loopback — a temp SQLite database (`migrate` + `seed_demo`), the mock LLM upstream and uvicorn with
DEBUG=0 and no Redis — and the schemathesis CLI fuzzes every operation with a fixed seed and a bounded
number of examples. Its JSON report is then asserted on:

* `test_no_server_errors`: no 5xx response (check `not_a_server_error`) and no request that errored;
* `test_responses_conform_to_schema`: status codes, content types and bodies as documented
  (`status_code_conformance`, `content_type_conformance`, `response_schema_conformance`).

Each credential gets its own stack because admin fuzzing mutates shared state (it may revoke keys,
suspend `acme-corp` or rewrite the demo alias). Reproduce a failure by hand with the curl line in the
assertion message, or with the CLI: `st run http://127.0.0.1:PORT/openapi.json -H "Authorization:
Bearer KEY" --seed 20251125 -n 20 --checks ...` against a stack started the same way.
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.live import ROOT, ServerProcess

pytest.importorskip("schemathesis", reason="schemathesis is pinned in requirements-dev.txt")

# Part of every `make test` (two stacks, ~1-2 minutes at 8 examples per operation and phase);
# `make fuzz` runs this module alone with more examples.
pytestmark = pytest.mark.live

SEED = int(os.environ.get("SAAS_LLM_FUZZ_SEED", "20251125"))
MAX_EXAMPLES = int(os.environ.get("SAAS_LLM_FUZZ_EXAMPLES", "8"))  # per operation and phase
RUN_TIMEOUT_S = 90 + 12 * MAX_EXAMPLES  # per credential kind
CHECKS = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"
SERVER_ERROR_CODES = {"ST101"}  # not_a_server_error


def _stack_env(tmp: Path) -> dict[str, str]:
    # CI exports Postgres/Redis URLs for the in-process suite; this stack is self-contained.
    return {
        "DJANGO_SETTINGS_MODULE": "saas_llm.settings",
        "DATABASE_URL": f"sqlite:///{tmp / 'db.sqlite3'}",
        "REDIS_URL": "",
        "CELERY_BROKER_URL": "",
        "SECRET_KEY": "schemathesis-live-secret-key-not-the-dev-one-0123456789",
        "DEBUG": "0",
        "SAAS_LLM_WEBHOOK_ALLOW_PRIVATE": "1",
        "PYTHONUNBUFFERED": "1",
    }


def _manage(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, f"manage.py {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def _seed_jobs(base_url: str, team_key: str, count: int = 3) -> list[str]:
    """A few open jobs of the demo team, so job-scoped operations get past 404 now and then."""
    headers = {"Authorization": f"Bearer {team_key}"}
    ids = []
    with httpx.Client(base_url=base_url, timeout=10, trust_env=False) as client:
        for n in range(count):
            response = client.post("/api/jobs/create", json={"job_type": f"fuzz-seed-{n}"}, headers=headers)
            assert response.status_code == 201, response.text
            ids.append(response.json()["job_id"])
    return ids


def _config(tmp: Path, job_ids: list[str]) -> Path:
    """Known ids mixed into generated path/query/body values (with a probability, not always)."""

    def values(items: list[str]) -> str:
        return "[" + ", ".join(json.dumps(item) for item in items) + "]"

    path = tmp / "schemathesis.toml"
    path.write_text(
        f"""
[dictionaries.job_ids]
values = {values(job_ids)}
[dictionaries.team_ids]
values = ["acme-corp"]
[dictionaries.org_ids]
values = ["acme"]
[dictionaries.aliases]
values = ["chat-fast"]
[dictionaries.groups]
values = ["standard"]

[parameters]
"path.job_id" = {{ dictionary = "job_ids", probability = 0.6 }}
"path.team_id" = {{ dictionary = "team_ids", probability = 0.5 }}
"query.team_id" = {{ dictionary = "team_ids", probability = 0.5 }}
"body.team_id" = {{ dictionary = "team_ids", probability = 0.5 }}
"path.organization_id" = {{ dictionary = "org_ids", probability = 0.5 }}
"path.alias_name" = {{ dictionary = "aliases", probability = 0.5 }}
"body.model" = {{ dictionary = "aliases", probability = 0.5 }}
"path.group_name" = {{ dictionary = "groups", probability = 0.5 }}
"""
    )
    return path


def _run_schemathesis(base_url: str, key: str, config: Path, workdir: Path) -> tuple[dict, str]:
    report = workdir / "report.json"
    args = [
        sys.executable, "-m", "schemathesis.cli",
        "--config-file", str(config),
        "run", f"{base_url}/openapi.json",
        "--header", f"Authorization: Bearer {key}",
        "--checks", CHECKS,
        "--max-examples", str(MAX_EXAMPLES),
        "--seed", str(SEED),
        "--workers", "2",
        "--request-timeout", "30",
        "--generation-database", "none",
        "--no-color",
        "--report", "json",
        "--report-json-path", str(report),
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCHEMATHESIS_")}
    try:
        done = subprocess.run(args, cwd=workdir, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"schemathesis did not finish in {RUN_TIMEOUT_S}s:\n{(exc.stdout or b'')[-4000:]!r}")
    output = done.stdout + done.stderr
    assert report.exists(), f"schemathesis wrote no report (exit {done.returncode}):\n{output[-6000:]}"
    document = json.loads(report.read_text())
    assert document["complete"] and document["operations"]["tested"] > 0, output[-6000:]
    return document, output


@pytest.fixture(scope="module", params=["team", "admin"])
def fuzz_run(request, tmp_path_factory):
    """One fresh stack and one schemathesis run per credential kind: (kind, report, CLI output, server log)."""
    kind = request.param
    tmp = tmp_path_factory.mktemp(f"schemathesis-{kind}")
    env = _stack_env(tmp)
    _manage(env, "migrate", "--noinput")
    mock = ServerProcess([sys.executable, "manage.py", "mock_llm_server", "--port", "{port}"], env=env)
    server = None
    try:
        keys_file = tmp / "keys.json"
        _manage(env, "seed_demo", "--mock-port", str(mock.port), "--keys-file", str(keys_file))
        keys = json.loads(keys_file.read_text())
        server = ServerProcess(
            [sys.executable, "-m", "uvicorn", "saas_llm.asgi:application", "--host", "127.0.0.1", "--port", "{port}"],
            env=env,
            timeout=60,
        )
        job_ids = _seed_jobs(server.url, keys["team_key"])
        document, output = _run_schemathesis(server.url, keys[f"{kind}_key"], _config(tmp, job_ids), tmp)
        yield kind, document, output, server.output()
    finally:
        if server is not None:
            server.stop()
        mock.stop()


def _failure_cases(output: str, codes: set[str] | None, exclude: bool = False, limit: int = 12000) -> str:
    """The CLI's reports of failing test cases (operation, check, response, curl to reproduce) whose
    failure codes are in `codes` (or not in them, with `exclude`), trimmed to `limit` characters."""
    start, end = output.find("=== FAILURES ==="), output.find("=== WARNINGS ===")
    if start == -1:
        start, end = output.find("FAILURES"), output.find("SUMMARY")
    section = output[start : end if end > start else None] if start != -1 else output
    kept, operation = [], ""
    for block in re.split(r"\n(?=_{3,} .+ _{3,}\n|\d+\. Test Case ID: )", section):
        header = re.match(r"_{3,} (.+?) _{3,}", block)
        if header:
            operation = header.group(1)
            block = block[header.end() :]
        found = set(re.findall(r"- (ST\d{3}) ", block))
        if not found or codes is None or (bool(found & codes) != exclude):
            if found:
                kept.append(f"--- {operation}\n{block.strip()}")
    return "\n\n".join(kept)[:limit]


def _describe(groups: list[dict]) -> str:
    lines = []
    for group in groups:
        lines.append(f"{group['code']} {group['title']} ×{group['count']}:")
        lines.extend(f"    {operation}" for operation in group["operations"])
    return "\n".join(lines)


def test_no_server_errors(fuzz_run):
    kind, document, output, server_log = fuzz_run
    server_errors = [group for group in document["failures"] if group["code"] in SERVER_ERROR_CODES]
    errored = document.get("errors") or []
    tracebacks = server_log.count("Traceback (most recent call last)")
    assert not server_errors and not errored, (
        f"[{kind} key] 5xx responses or errored requests while fuzzing (SPEC §4: never a 5xx for bad input)\n"
        f"{_describe(server_errors)}\nerrors: {json.dumps(errored, indent=1)[:2000]}\n"
        f"server tracebacks logged: {tracebacks}\n\n{_failure_cases(output, SERVER_ERROR_CODES)}"
    )


def test_responses_conform_to_schema(fuzz_run):
    kind, document, output, _ = fuzz_run
    mismatches = [group for group in document["failures"] if group["code"] not in SERVER_ERROR_CODES]
    assert not mismatches, (
        f"[{kind} key] responses that /openapi.json does not document\n{_describe(mismatches)}\n\n"
        f"{_failure_cases(output, SERVER_ERROR_CODES, exclude=True)}"
    )
