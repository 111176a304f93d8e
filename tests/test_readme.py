"""The README's 5-minute curl walkthrough, run as written against a fresh `make run`-like stack.

The bash block is taken from README.md as is; only the host is pointed at this test's server, and
curl fails on any HTTP error (`--fail-with-body`), so a walkthrough step that stops working fails here.
"""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.live import ROOT, ServerProcess

pytestmark = [
    pytest.mark.live,
    pytest.mark.skipif(shutil.which("curl") is None, reason="the walkthrough is curl commands"),
]


def walkthrough() -> str:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## A 5-minute walkthrough with curl", 1)[1]
    return re.search(r"```bash\n(.*?)```", section, re.S).group(1)


def test_readme_curl_walkthrough_works_as_written(tmp_path: Path):
    env = {
        **{k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL")},
        "DJANGO_SETTINGS_MODULE": "saas_llm.settings",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
        "DEBUG": "1",  # as under `make run`
        "PYTHONUNBUFFERED": "1",
    }

    def manage(*args: str) -> None:
        done = subprocess.run(
            [sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=180
        )
        assert done.returncode == 0, done.stdout + done.stderr

    manage("migrate", "--noinput")
    mock = ServerProcess([sys.executable, "manage.py", "mock_llm_server", "--port", "{port}"], env=env)
    server = None
    try:
        manage("seed_demo", "--mock-port", str(mock.port), "--keys-file", str(tmp_path / ".demo-keys.json"))
        server = ServerProcess(
            [sys.executable, "-m", "uvicorn", "saas_llm.asgi:application", "--host", "127.0.0.1", "--port", "{port}"],
            env=env,
            timeout=60,
        )
        script = walkthrough().replace("localhost:8003", f"127.0.0.1:{server.port}")
        done = subprocess.run(
            ["bash", "-c", 'set -euo pipefail\ncurl() { command curl --fail-with-body "$@"; }\n' + script],
            cwd=tmp_path,  # where the walkthrough reads .demo-keys.json
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, f"walkthrough failed:\n{done.stdout[-4000:]}\n{done.stderr[-2000:]}"
    finally:
        if server is not None:
            server.stop()
        mock.stop()

    out = done.stdout
    assert '"status":"healthy"' in out.replace(" ", "")
    assert '"virtual_key": "sk-' in out or '"virtual_key":"sk-' in out
    assert "data: [DONE]" in out  # the streaming call
    assert "idempotent-replayed: true" in out.lower()  # step 5's second request
    remaining = [float(value) for value in re.findall(r'"credits_remaining":\s*([0-9.]+)', out)]
    # The demo team: 100 credits, + 25 in step 3, − 1 for the job in step 4 ("# 1 credit charged").
    assert 125.0 in remaining and remaining[-1] == 124.0, remaining
