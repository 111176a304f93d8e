"""`make bench`: the gateway vs LiteLLM Proxy vs the bare mock upstream, on one machine, in one run.

What it does (see bench/README.md for the details and how to read the results):
  1. starts the project's mock upstream (0 ms latency, 20-chunk streams);
  2. recreates the Postgres database `saas_llm_bench`, flushes Redis db 9, migrates, seeds the demo team
     (`seed_demo`), grants 1 000 000 credits and lifts the team's limits through the API;
  3. starts the gateway (uvicorn, 1 worker, Postgres + Redis, full bookkeeping) and LiteLLM Proxy
     (`litellm --num_workers 1`, no database, from a separate venv) routed to the same mock;
  4. drives the mock directly (baseline), the gateway and the proxy with the same closed-loop load
     generator (bench/loadgen.py): non-streaming and streaming, at concurrency 1 and 32;
  5. samples each server's CPU time from /proc around every measured window, and peak RSS (VmHWM);
  6. prints the table and the gateway / proxy ratios, writes bench/results.md, bench/results.json (machine +
     gateway / proxy ratios, see summary_json()) and the raw JSON in bench/results-raw/, and stops
     everything it started — also on Ctrl-C and on errors.

Environment knobs (all optional):
  BENCH_PROXY_VENV   venv holding litellm[proxy] (default /tmp/bench-venv; created when missing)
  BENCH_PG_URL       admin URL of the Postgres server (default postgres://postgres@127.0.0.1:5432/postgres)
  BENCH_REDIS_URL    Redis URL for the gateway (default redis://127.0.0.1:6379/9 — flushed at start)
  BENCH_DURATION     seconds of each concurrency-32 phase (default 20)
  BENCH_REQUESTS     requests of each concurrency-1 phase (default 500)
  BENCH_PROFILE=1    also profile the gateway with py-spy during an extra non-streaming c=32 phase
  BENCH_KEEP_DB=1    keep the benchmark database at the end (default: dropped)
  BENCH_GATEWAY_LOG_LEVEL  LOG_LEVEL of the gateway (default WARNING, like the proxy's LITELLM_LOG=ERROR)
"""

from __future__ import annotations

import collections
import json
import os
import platform
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
RAW_DIR = BENCH_DIR / "results-raw"
PY = sys.executable
LOADGEN = BENCH_DIR / "loadgen.py"

PROXY_VENV = Path(os.environ.get("BENCH_PROXY_VENV", "/tmp/bench-venv"))
PG_ADMIN_URL = os.environ.get("BENCH_PG_URL", "postgres://postgres@127.0.0.1:5432/postgres")
DB_NAME = "saas_llm_bench"
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/9")
C32_DURATION = float(os.environ.get("BENCH_DURATION", "20"))
C1_REQUESTS = int(os.environ.get("BENCH_REQUESTS", "500"))
PROFILE = os.environ.get("BENCH_PROFILE", "") not in ("", "0")
KEEP_DB = os.environ.get("BENCH_KEEP_DB", "") not in ("", "0")
GATEWAY_LOG_LEVEL = os.environ.get("BENCH_GATEWAY_LOG_LEVEL", "WARNING")
BUDGET_S = 8 * 60  # the whole run, install of the proxy venv excluded
TEARDOWN_RESERVE_S = 25
MODEL = "chat-fast"
PROMPT = "Say hello to the benchmark."

CLK_TCK = os.sysconf("SC_CLK_TCK")
T_START = time.monotonic()


def log(msg: str) -> None:
    print(f"[bench {time.monotonic() - T_START:6.1f}s] {msg}", flush=True)


# --------------------------------------------------------------------------- process bookkeeping

STARTED: list[subprocess.Popen] = []


def spawn(name: str, argv: list[str], env: dict, logfile: Path, cwd: Path = ROOT) -> subprocess.Popen:
    out = open(logfile, "wb")
    proc = subprocess.Popen(
        argv, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
    )
    proc.bench_name = name  # type: ignore[attr-defined]
    proc.bench_log = logfile  # type: ignore[attr-defined]
    STARTED.append(proc)
    log(f"started {name} (pid {proc.pid}), log {logfile}")
    return proc


def stop(proc: subprocess.Popen, timeout: float = 8.0) -> None:
    """SIGTERM the process group this script created for `proc`, then SIGKILL what is left."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pass
    try:  # stragglers in the same group (uvicorn children, py-spy, …)
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(timeout=2)
    except subprocess.TimeoutExpired:
        pass


def stop_all() -> None:
    while STARTED:
        proc = STARTED.pop()
        stop(proc)
        log(f"stopped {getattr(proc, 'bench_name', proc.pid)}")


def check_alive(procs: list[subprocess.Popen], logs: Path) -> None:
    """Fail loudly, with the tail of its log, when a server this script started has exited."""
    for proc in procs:
        if proc.poll() is not None:
            name = getattr(proc, "bench_name", proc.pid)
            tail = ""
            logfile = getattr(proc, "bench_log", None)
            if logfile and Path(logfile).exists():
                tail = "\n".join(Path(logfile).read_text(errors="replace").splitlines()[-15:])
            raise RuntimeError(f"{name} (pid {proc.pid}) exited with {proc.returncode}; log tail:\n{tail}")


def _on_signal(signum, frame):  # noqa: ARG001
    raise KeyboardInterrupt(f"signal {signum}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(method: str, url: str, body: dict | None = None, token: str | None = None, timeout: float = 10.0):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return resp.status, json.loads(resp.read() or b"null")


def wait_ready(name: str, url: str, proc: subprocess.Popen, timeout: float = 120.0) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with {proc.returncode} before it was ready (see its log)")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return time.monotonic() - t0
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.25)
    raise RuntimeError(f"{name} not ready after {timeout:.0f}s at {url}")


# --------------------------------------------------------------------------- /proc sampling


def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return raw[raw.rindex(")") + 2 :].split()  # fields from #3 (state) on


def process_tree(root: int) -> list[int]:
    children: dict[int, list[int]] = collections.defaultdict(list)
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            f = _stat_fields(int(entry))
            if f:
                children[int(f[1])].append(int(entry))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def cpu_seconds(pids: list[int]) -> float:
    """utime + stime (+ cutime + cstime: reaped children) of the given processes, all threads included."""
    ticks = 0
    for pid in pids:
        f = _stat_fields(pid)
        if f:
            ticks += int(f[11]) + int(f[12]) + int(f[13]) + int(f[14])
    return ticks / CLK_TCK


def sys_cpu_seconds(pids: list[int]) -> float:
    """stime (+ cstime) only: the kernel's share of cpu_seconds()."""
    ticks = 0
    for pid in pids:
        f = _stat_fields(pid)
        if f:
            ticks += int(f[12]) + int(f[14])
    return ticks / CLK_TCK


def cpu_by_pid(pids: list[int]) -> dict[int, float]:
    out = {}
    for pid in pids:
        f = _stat_fields(pid)
        if f:
            out[pid] = (int(f[11]) + int(f[12])) / CLK_TCK
    return out


def memory_kib(pids: list[int]) -> tuple[int, int]:
    """(sum of VmHWM, sum of VmRSS) in KiB over the processes."""
    hwm = rss = 0
    for pid in pids:
        try:
            text = Path(f"/proc/{pid}/status").read_text()
        except (FileNotFoundError, ProcessLookupError):
            continue
        m = re.search(r"^VmHWM:\s+(\d+)", text, re.M)
        hwm += int(m.group(1)) if m else 0
        m = re.search(r"^VmRSS:\s+(\d+)", text, re.M)
        rss += int(m.group(1)) if m else 0
    return hwm, rss


def machine_busy_seconds() -> float:
    parts = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    values = [int(x) for x in parts[:8]]
    return (sum(values) - values[3] - values[4]) / CLK_TCK  # minus idle and iowait


def pids_by_comm(name: str) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if Path(f"/proc/{entry}/comm").read_text().strip() == name:
                    out.append(int(entry))
            except (FileNotFoundError, ProcessLookupError):
                pass
    return out


class Sampler:
    """CPU of each server's process tree, of the Postgres backends of the bench database, of Redis
    and of the whole machine, sampled before and after a measured window."""

    def __init__(self, servers: dict[str, int], pg_conn):
        self.servers = servers
        self.pg_conn = pg_conn
        self.redis_pids = pids_by_comm("redis-server")

    def _pg_backends(self) -> list[int]:
        with self.pg_conn.cursor() as cur:
            cur.execute("SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()", (DB_NAME,))
            return [row[0] for row in cur.fetchall()]

    def _pg_xacts(self) -> int:
        with self.pg_conn.cursor() as cur:
            cur.execute("SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = %s", (DB_NAME,))
            return int(cur.fetchone()[0])

    def snapshot(self) -> dict:
        trees = {name: process_tree(pid) for name, pid in self.servers.items()}
        return {
            "servers": {name: cpu_seconds(pids) for name, pids in trees.items()},
            "servers_sys": {name: sys_cpu_seconds(pids) for name, pids in trees.items()},
            "pg_xacts": self._pg_xacts(),
            "pg": cpu_by_pid(self._pg_backends()),
            "redis": cpu_seconds(self.redis_pids),
            "machine": machine_busy_seconds(),
            "t": time.monotonic(),
        }

    @staticmethod
    def delta(a: dict, b: dict) -> dict:
        return {
            "servers": {name: b["servers"][name] - a["servers"][name] for name in a["servers"]},
            "servers_sys": {name: b["servers_sys"][name] - a["servers_sys"][name] for name in a["servers"]},
            # pg_stat_database is refreshed by the stats collector: a few ms late, good enough over seconds
            "pg_xacts": b["pg_xacts"] - a["pg_xacts"],
            "pg": sum(cpu - a["pg"].get(pid, 0.0) for pid, cpu in b["pg"].items()),
            "redis": b["redis"] - a["redis"],
            "machine": b["machine"] - a["machine"],
            "wall": b["t"] - a["t"],
        }


# --------------------------------------------------------------------------- load generation


def run_loadgen(
    client_py: str,
    url: str,
    body: dict,
    headers: list[str],
    concurrency: int,
    requests: int | None,
    duration: float | None,
    warmup: int,
    sampler: Sampler | None,
    workdir: Path,
) -> dict:
    body_file = workdir / f"body-{abs(hash(json.dumps(body, sort_keys=True)))}.json"
    body_file.write_text(json.dumps(body))
    argv = [client_py, str(LOADGEN), "--url", url, "--body-file", str(body_file), "--concurrency", str(concurrency)]
    argv += ["--warmup", str(warmup), "--warmup-seconds", "3"]
    if requests:
        argv += ["--requests", str(requests)]
    if duration:
        argv += ["--duration", str(duration)]
    for h in headers:
        argv += ["--header", h]
    if sampler is None:
        argv.append("--no-wait")
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, start_new_session=True)
    proc.bench_name = "loadgen"  # type: ignore[attr-defined]
    STARTED.append(proc)
    try:
        limit = (duration or 0) + 120
        if sampler is not None:
            ready, _, _ = select.select([proc.stdout], [], [], 120)
            line = proc.stdout.readline().strip() if ready else ""
            if line != "ready":
                raise RuntimeError(f"load generator not ready (got {line!r})")
            s0 = sampler.snapshot()
            proc.stdin.write("go\n")
            proc.stdin.flush()
            out, _ = proc.communicate(timeout=limit)
            s1 = sampler.snapshot()
            result = json.loads(out.strip().splitlines()[-1])
            result["cpu"] = Sampler.delta(s0, s1)
        else:
            out, _ = proc.communicate(timeout=limit + 120)
            result = json.loads(out.strip().splitlines()[-1])
        return result
    finally:
        if proc in STARTED:
            STARTED.remove(proc)
        stop(proc, timeout=2)


# --------------------------------------------------------------------------- setup helpers


def pg_connect(url: str):
    import psycopg

    return psycopg.connect(url, autocommit=True, connect_timeout=5)


def db_url() -> str:
    """BENCH_PG_URL with its database name replaced by the benchmark's."""
    scheme, rest = PG_ADMIN_URL.split("://", 1)
    rest = re.sub(r"/[^/?]*(\?|$)", f"/{DB_NAME}\\1", rest, count=1) if "/" in rest else f"{rest}/{DB_NAME}"
    return f"{scheme}://{rest}"


def recreate_database() -> None:
    with pg_connect(PG_ADMIN_URL) as conn:
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            (DB_NAME,),
        )
        conn.execute(f'DROP DATABASE IF EXISTS "{DB_NAME}"')
        conn.execute(f'CREATE DATABASE "{DB_NAME}"')


def drop_database() -> None:
    try:
        with pg_connect(PG_ADMIN_URL) as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                (DB_NAME,),
            )
            conn.execute(f'DROP DATABASE IF EXISTS "{DB_NAME}"')
    except Exception as exc:  # noqa: BLE001 - best effort at teardown
        log(f"could not drop {DB_NAME}: {exc}")


def flush_redis() -> None:
    import redis

    redis.Redis.from_url(REDIS_URL, socket_timeout=5).flushdb()


def manage(args: list[str], env: dict) -> str:
    res = subprocess.run([PY, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
    if res.returncode != 0:
        raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{res.stdout}\n{res.stderr}")
    return res.stdout


def proxy_python() -> Path:
    return PROXY_VENV / "bin" / "python"


def ensure_proxy_venv(litellm_version: str) -> None:
    """LiteLLM Proxy lives in its own venv (never the project's). Install it once when missing."""
    py = proxy_python()
    if py.exists():
        res = subprocess.run(
            [str(py), "-c", "import importlib.metadata as m, fastapi, uvicorn; print(m.version('litellm'))"],
            capture_output=True,
            text=True,
        )
        if res.returncode == 0 and res.stdout.strip() == litellm_version and (PROXY_VENV / "bin/litellm").exists():
            return
    log(f"installing litellm[proxy]=={litellm_version} into {PROXY_VENV} (one-off, not part of the time budget)")
    global T_START
    t0 = time.monotonic()
    if not py.exists():
        subprocess.run([sys.executable, "-m", "venv", str(PROXY_VENV)], check=True)
    pip = [str(py), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    res = subprocess.run([*pip, f"litellm[proxy]=={litellm_version}", "py-spy"])
    if res.returncode != 0:
        # Some indexes lack the exactly-pinned helper packages of the `proxy` extra (litellm-proxy,
        # litellm-proxy-extras, litellm-enterprise); the proxy server itself ships inside `litellm`,
        # so install litellm plus the extra's other requirements.
        log("litellm[proxy] did not resolve; installing litellm + the proxy extra's requirements instead")
        reqs = []
        for req in metadata.requires("litellm") or []:
            if "extra == 'proxy'" not in req and 'extra == "proxy"' not in req:
                continue
            spec, _, marker = req.partition(";")
            if spec.strip().startswith("litellm-") or "python_full_version >= '3.15'" in marker:
                continue
            reqs.append(spec.strip())
        subprocess.run([*pip, f"litellm=={litellm_version}", *reqs, "py-spy"], check=True)
    T_START += time.monotonic() - t0


def versions(py: str, names: list[str]) -> dict[str, str]:
    code = (
        "import json, importlib.metadata as m\n"
        f"out = {{}}\nfor n in {names!r}:\n"
        "    try: out[n] = m.version(n)\n"
        "    except m.PackageNotFoundError: out[n] = '-'\n"
        "print(json.dumps(out))"
    )
    res = subprocess.run([py, "-c", code], capture_output=True, text=True)
    return json.loads(res.stdout) if res.returncode == 0 else {}


def machine_info(pg_conn) -> dict:
    cpu_model = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu_model = line.split(":", 1)[1].strip()
            break
    mem_kib = int(re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text()).group(1))
    with pg_conn.cursor() as cur:
        cur.execute("SHOW server_version")
        pg_version = cur.fetchone()[0]
    try:
        import redis

        redis_version = redis.Redis.from_url(REDIS_URL, socket_timeout=5).info("server")["redis_version"]
    except Exception:  # noqa: BLE001
        redis_version = "?"
    return {
        "nproc": os.cpu_count(),
        "cpu_model": cpu_model,
        "kernel": platform.release(),
        "memory_gib": round(mem_kib / 1024 / 1024, 1),
        "python": platform.python_version(),
        "postgres": pg_version,
        "redis": redis_version,
        "loadavg_start": Path("/proc/loadavg").read_text().split()[:3],
    }


# --------------------------------------------------------------------------- the benchmark

PHASES = [
    # name, stream, concurrency, requests, duration cap (s), warm-up requests
    ("non-stream c=1", False, 1, C1_REQUESTS, 60.0, 20),
    ("non-stream c=32", False, 32, None, C32_DURATION, 96),
    ("stream c=1", True, 1, C1_REQUESTS, 60.0, 20),
    ("stream c=32", True, 32, None, C32_DURATION, 96),
]


def phase_estimate(name: str, target: str) -> float:
    """Worst case of a phase (warm-up ≤ 3 s + its duration cap), so the budget check never overshoots."""
    if "c=32" in name:
        return C32_DURATION + 5
    return 5 if target == "mock" else 64


def main() -> int:
    signal.signal(signal.SIGINT, _on_signal)  # also when started in the background with SIGINT ignored
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGHUP, _on_signal)
    RAW_DIR.mkdir(exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="saas-llm-bench-"))
    litellm_version = metadata.version("litellm")
    ensure_proxy_venv(litellm_version)
    client_py = str(proxy_python()) if proxy_python().exists() else PY  # uvloop there: a leaner client
    pg_conn = None
    results: dict = {"phases": {}, "skipped": []}
    try:
        mock_port, gw_port, proxy_port = free_port(), free_port(), free_port()
        base_env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL")}

        # 1. the mock upstream
        mock = spawn(
            "mock upstream",
            [PY, "manage.py", "mock_llm_server", "--host", "127.0.0.1", "--port", str(mock_port), "--chunks", "20"],
            {**base_env, "DJANGO_SETTINGS_MODULE": "saas_llm.settings"},
            workdir / "mock.log",
        )

        # 2. LiteLLM Proxy (boots in ~20 s: start it first, it needs no database)
        proxy_cfg = workdir / "litellm-config.yaml"
        proxy_cfg.write_text(
            "model_list:\n"
            f"  - model_name: {MODEL}\n"
            "    litellm_params:\n"
            "      model: openai/demo-model\n"
            f"      api_base: http://127.0.0.1:{mock_port}/v1\n"
            "      api_key: sk-x\n"
            # the demo alias's prices (seed_demo), so both servers price calls the same way
            "      input_cost_per_token: 0.00000015\n"
            "      output_cost_per_token: 0.0000006\n"
            "litellm_settings:\n"
            "  telemetry: false\n"
            "general_settings:\n"
            "  disable_spend_logs: true\n"
            "  disable_error_logs: true\n"
        )
        proxy_env = {
            k: v for k, v in base_env.items() if not k.startswith(("LITELLM_", "DJANGO_")) and k != "DATABASE_URL"
        }
        proxy_env.update(
            LITELLM_LOCAL_MODEL_COST_MAP="True",
            LITELLM_LOG="ERROR",
            LITELLM_DANGEROUSLY_PERMIT_WEAK_OR_UNSET_MASTER_KEY="true",  # master key off, as asked
            LITELLM_TELEMETRY="False",
            LITELLM_MODE="PRODUCTION",
            DISABLE_ADMIN_UI="True",
        )
        proxy = spawn(
            "LiteLLM Proxy",
            [
                str(PROXY_VENV / "bin" / "litellm"),
                "--config",
                str(proxy_cfg),
                "--host",
                "127.0.0.1",
                "--port",
                str(proxy_port),
                "--num_workers",
                "1",
                "--telemetry",
                "False",
            ],
            proxy_env,
            workdir / "proxy.log",
            cwd=workdir,
        )

        # 3. the gateway's database, Redis, migrations and demo data
        gw_env = {
            **base_env,
            "DATABASE_URL": db_url(),
            "REDIS_URL": REDIS_URL,
            "SECRET_KEY": "bench",
            "DEBUG": "0",
            "LOG_LEVEL": GATEWAY_LOG_LEVEL,
            "DJANGO_SETTINGS_MODULE": "saas_llm.settings",
        }
        recreate_database()
        flush_redis()
        manage(["migrate", "--noinput"], gw_env)
        keys_file = workdir / "keys.json"
        manage(["seed_demo", "--mock-port", str(mock_port), "--keys-file", str(keys_file)], gw_env)
        manage(["add_credits", "acme-corp", "1000000", "--reason", "benchmark"], gw_env)
        keys = json.loads(keys_file.read_text())
        log("database ready (migrated, seeded, 1 000 000 credits)")

        # 4. the gateway
        gateway = spawn(
            "gateway",
            [
                str(ROOT / ".venv" / "bin" / "uvicorn") if (ROOT / ".venv/bin/uvicorn").exists() else "uvicorn",
                "saas_llm.asgi:application",
                "--host",
                "127.0.0.1",
                "--port",
                str(gw_port),
                "--workers",
                "1",
                "--no-access-log",
                "--log-level",
                "warning",
            ],
            gw_env,
            workdir / "gateway.log",
        )
        wait_ready("mock upstream", f"http://127.0.0.1:{mock_port}/health", mock, 60)
        boot_gw = wait_ready("gateway", f"http://127.0.0.1:{gw_port}/health", gateway, 180)
        boot_proxy = wait_ready("LiteLLM Proxy", f"http://127.0.0.1:{proxy_port}/health/liveliness", proxy, 180)
        log(f"all servers ready (gateway after {boot_gw:.1f}s, proxy after {boot_proxy:.1f}s of waiting)")

        admin, team = keys["admin_key"], keys["team_key"]
        gw = f"http://127.0.0.1:{gw_port}"
        http(
            "PUT",
            f"{gw}/api/teams/acme-corp",
            {"rpm_limit": 1_000_000, "tpm_limit": 10**12, "max_parallel_requests": 10_000},
            admin,
        )
        _, job = http("POST", f"{gw}/api/jobs/create", {"job_type": "bench-long-lived"}, team)
        job_id = job["job_id"]

        pg_conn = pg_connect(db_url())
        results["machine"] = machine_info(pg_conn)
        sampler = Sampler({"gateway": gateway.pid, "proxy": proxy.pid, "mock": mock.pid}, pg_conn)

        body = {"model": MODEL, "messages": [{"role": "user", "content": PROMPT}]}
        targets = [
            # name, server key, url, headers, body (non-stream), phases
            ("direct (mock)", "mock", f"http://127.0.0.1:{mock_port}/v1/chat/completions", [], body, PHASES),
            ("gateway /v1", "gateway", f"{gw}/v1/chat/completions", [f"Authorization: Bearer {team}"], body, PHASES),
            ("LiteLLM Proxy", "proxy", f"http://127.0.0.1:{proxy_port}/v1/chat/completions", [], body, PHASES),
            (
                "gateway llm-call",
                "gateway",
                f"{gw}/api/jobs/{job_id}/llm-call",
                [f"Authorization: Bearer {team}"],
                body,
                PHASES[:2],
            ),
        ]
        gw_requests = {"v1": 0, "llm-call": 0}
        for target, server, url, headers, target_body, phases in targets:
            for name, stream, conc, n, dur, warm in phases:
                est = phase_estimate(name, server)
                if time.monotonic() - T_START + est > BUDGET_S - TEARDOWN_RESERVE_S - (25 if PROFILE else 0):
                    log(f"SKIP {target} / {name}: the 8-minute budget would be exceeded")
                    results["skipped"].append(f"{target} / {name}")
                    continue
                check_alive([mock, gateway, proxy], workdir)
                phase_body = dict(target_body, stream=True) if stream else target_body
                res = run_loadgen(client_py, url, phase_body, headers, conc, n, dur, warm, sampler, workdir)
                res["server"] = server
                results["phases"][f"{target} | {name}"] = res
                if server == "gateway":
                    gw_requests["llm-call" if "llm-call" in url else "v1"] += res["ok"] + res["warmup"]["ok"]
                cpu = res["cpu"]["servers"][server] * 1000 / max(res["ok"], 1)
                log(
                    f"{target:17s} {name:16s} ok={res['ok']:6d} err={res['errors']:3d} rps={res['rps']:8.1f} "
                    f"p50={res['total_ms']['p50']:7.2f}ms p99={res['total_ms']['p99']:7.2f}ms "
                    f"ttfb50={res['ttfb_ms']['p50']:7.2f}ms cpu/req={cpu:6.2f}ms"
                )

        # peak memory of each server tree (VmHWM since start) and current RSS
        results["memory"] = {}
        for key, proc in (("gateway", gateway), ("proxy", proxy), ("mock", mock)):
            hwm, rss = memory_kib(process_tree(proc.pid))
            results["memory"][key] = {"peak_rss_mib": hwm / 1024, "rss_mib": rss / 1024}

        # the books: every successful gateway request must be one call row, one job, one charge
        with pg_conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM jobs_llmcall")
            calls = cur.fetchone()[0]
            cur.execute("SELECT count(*) FROM jobs_job WHERE job_type = 'chat.completions' AND status = 'completed'")
            v1_jobs = cur.fetchone()[0]
            cur.execute("SELECT count(*) FROM billing_ledgerentry")
            ledger = cur.fetchone()[0]
        verify = subprocess.run(
            [PY, "manage.py", "verify_ledger"], cwd=ROOT, env=gw_env, capture_output=True, text=True, timeout=120
        )
        results["books"] = {
            "gateway_ok_requests_incl_warmup": gw_requests,
            "llm_call_rows": calls,
            "completed_chat_completions_jobs": v1_jobs,
            "ledger_entries": ledger,
            "verify_ledger": (verify.stdout + verify.stderr).strip(),
        }
        log(f"books: {results['books']}")

        if PROFILE:
            results["profile"] = profile_gateway(
                client_py, gateway.pid, f"{gw}/v1/chat/completions", team, body, workdir
            )

        results["machine"]["loadavg_end"] = Path("/proc/loadavg").read_text().split()[:3]
        results["versions"] = {
            "gateway venv": versions(PY, ["django", "litellm", "uvicorn", "uvloop", "httptools", "psycopg", "redis"]),
            "proxy venv": versions(
                str(proxy_python()), ["litellm", "fastapi", "uvicorn", "uvloop", "httptools", "orjson"]
            ),
        }
        results["client"] = {"python": client_py, "loop": next(iter(results["phases"].values()))["event_loop"]}
        results["wall_s"] = time.monotonic() - T_START
        now = time.time()
        results["generated"] = time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(now))
        results["generated_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))
        report = render(results)
        print("\n" + report)
        (BENCH_DIR / "results.md").write_text(report)
        (RAW_DIR / "results.json").write_text(json.dumps(results, indent=2, default=str))
        write_summary_json(results)  # last: the raw numbers are safe on disk whatever happens here
        log("wrote bench/results.md, bench/results.json and bench/results-raw/")
        return 0
    except KeyboardInterrupt as exc:
        log(f"interrupted ({exc}); stopping everything")
        return 130
    except Exception:
        for proc in STARTED:
            if proc.poll() is not None:
                log(f"{getattr(proc, 'bench_name', proc.pid)} had exited with {proc.returncode}")
        raise
    finally:
        stop_all()
        for logname in ("gateway.log", "proxy.log", "mock.log"):  # kept for a post-mortem too
            if (workdir / logname).exists():
                shutil.copy(workdir / logname, RAW_DIR / logname)
        if pg_conn is not None:
            pg_conn.close()
        if not KEEP_DB:
            drop_database()
        shutil.rmtree(workdir, ignore_errors=True)
        log(f"done in {time.monotonic() - T_START:.0f}s")


# --------------------------------------------------------------------------- profiling (BENCH_PROFILE=1)


def profile_gateway(client_py: str, pid: int, url: str, team: str, body: dict, workdir: Path) -> dict:
    pyspy = PROXY_VENV / "bin" / "py-spy"
    if not pyspy.exists():
        return {"error": f"{pyspy} missing"}
    out_file = RAW_DIR / "gateway-profile.collapsed.txt"
    body_file = workdir / "profile-body.json"
    body_file.write_text(json.dumps(body))
    argv = [client_py, str(LOADGEN), "--url", url, "--body-file", str(body_file), "--concurrency", "32"]
    argv += ["--duration", "17", "--warmup", "64", "--no-wait", "--header", f"Authorization: Bearer {team}"]
    load = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, start_new_session=True)
    load.bench_name = "loadgen (profile)"  # type: ignore[attr-defined]
    STARTED.append(load)
    time.sleep(1.5)
    spy = subprocess.run(
        [
            str(pyspy),
            "record",
            "-p",
            str(pid),
            "-d",
            "15",
            "-r",
            "100",
            "-f",
            "raw",
            "--threads",
            "--gil",  # samples where a thread holds the GIL: the worker's Python CPU, idle waits excluded
            "--full-filenames",
            "-o",
            str(out_file),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    load_out, _ = load.communicate(timeout=60)
    STARTED.remove(load)
    if spy.returncode != 0 or not out_file.exists():
        return {"error": (spy.stdout + spy.stderr)[-2000:]}
    summary = summarize_profile(out_file)
    try:
        summary["load"] = json.loads(load_out.strip().splitlines()[-1])
    except (ValueError, IndexError):
        pass
    (RAW_DIR / "gateway-profile.summary.json").write_text(json.dumps(summary, indent=2))
    return summary


_FRAME_RE = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


PROJECT_APPS = ("saas_llm", "jobs", "tenants", "billing", "models_registry")
# frames that sit above every request (server loop, thread bootstrap): left out of "top inclusive"
SCAFFOLDING = {"click", "uvicorn", "stdlib:asyncio", "stdlib:threading", "stdlib:concurrent", "asgiref"}


def _package(path: str) -> str:
    """The distribution a frame's file belongs to: `litellm`, `django`, `stdlib:asyncio`, `project:jobs`, …"""
    if "site-packages/" in path:
        return path.split("site-packages/", 1)[1].split("/", 1)[0].removesuffix(".py")
    if "/lib/python3" in path:
        rest = path.rsplit("/lib/python3", 1)[1].split("/", 2)
        return "stdlib:" + (rest[1].removesuffix(".py") if len(rest) > 1 else "?")
    if path.startswith("<frozen"):
        return "stdlib:" + path.strip("<>").split()[-1]
    parts = Path(path).parts
    for app in PROJECT_APPS:
        if app in parts:
            return f"project:{app}"
    return path or "?"


def summarize_profile(path: Path, top: int = 15) -> dict:
    self_counts: collections.Counter = collections.Counter()
    incl_counts: collections.Counter = collections.Counter()
    pkg_self: collections.Counter = collections.Counter()
    project_incl: collections.Counter = collections.Counter()
    threads: collections.Counter = collections.Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        total += n
        frames = stack.split(";")
        if frames and frames[0].startswith(("thread ", "process ")):
            threads[frames[0]] += n
            frames = frames[1:]
        while frames and frames[0].startswith(("process ", "thread ")):
            frames = frames[1:]
        names = []
        for fr in frames:
            m = _FRAME_RE.match(fr)
            func, file = (m.group("func"), m.group("file")) if m else (fr, "")
            if "site-packages/" in file:
                short = file.split("site-packages/", 1)[1]
            elif "/lib/python3" in file:
                short = file.split("/lib/python3", 1)[1].partition("/")[2]
            else:
                short = file.replace(str(ROOT) + "/", "")
            names.append((f"{func} ({short})", file))
        if not names:
            continue
        self_counts[names[-1][0]] += n
        pkg_self[_package(names[-1][1])] += n
        for name in {nm for nm, file in names if _package(file) not in SCAFFOLDING and not nm.startswith("<module>")}:
            incl_counts[name] += n
        for name in {nm for nm, file in names if _package(file).startswith("project:")}:
            project_incl[name] += n

    def pct(c):
        return round(100.0 * c / total, 1) if total else 0.0

    return {
        "samples": total,
        "threads": [(t, pct(c)) for t, c in threads.most_common(8)],
        "top_self": [(f, pct(c)) for f, c in self_counts.most_common(top)],
        "top_inclusive": [(f, pct(c)) for f, c in incl_counts.most_common(top + 10)],
        "by_package_self": [(p, pct(c)) for p, c in pkg_self.most_common(top)],
        "project_inclusive": [(f, pct(c)) for f, c in project_incl.most_common(top)],
    }


# --------------------------------------------------------------------------- report


def _fmt(x: float, digits: int = 2) -> str:
    return "-" if x != x else f"{x:.{digits}f}"  # NaN → "-"


NAN = float("nan")
DIRECT, GW_V1, GW_LLM_CALL, PROXY = "direct (mock)", "gateway /v1", "gateway llm-call", "LiteLLM Proxy"


def _ratio(g: float, p: float) -> float:
    """gateway ÷ proxy; NaN when either side is missing (NaN) or the proxy's value is 0."""
    return g / p if p else NAN


def phase_metrics(r: dict) -> dict[str, dict[str, float]]:
    """The derived numbers of every measured phase, keyed like r["phases"] ("<target> | <phase>").

    The one computation behind the results table, the ratio rows and bench/results.json. Per-request
    numbers are in ms; NaN where a number does not apply (PG columns of a non-gateway target, the
    overheads of the direct rows or when the direct row of the phase is missing)."""
    ph = r["phases"]
    out = {}
    for key, res in ph.items():
        phase = key.split(" | ", 1)[1]
        direct = ph.get(f"{DIRECT} | {phase}")
        vs_direct = direct is not None and res["server"] != "mock"
        gateway = res["server"] == "gateway"
        ok = max(res["ok"], 1)
        cpu = res["cpu"]
        srv = cpu["servers"][res["server"]]
        accounted = sum(cpu["servers"].values()) + cpu["pg"] + cpu["redis"] + res["client_cpu_s"]
        out[key] = {
            "rps": res["rps"],
            "cpu_ms_per_req": srv * 1000 / ok,
            "sys_share": cpu["servers_sys"][res["server"]] / max(srv, 1e-9),
            "mock_cpu_ms_per_req": cpu["servers"]["mock"] * 1000 / ok if res["server"] != "mock" else NAN,
            "db_cpu_ms_per_req": (cpu["pg"] + cpu["redis"]) * 1000 / ok if gateway else NAN,
            "pg_xacts_per_req": cpu["pg_xacts"] / ok if gateway else NAN,
            "client_cpu_ms_per_req": res["client_cpu_s"] * 1000 / ok,
            "other_cores": max(cpu["machine"] - accounted, 0.0) / max(cpu["wall"], 1e-9),
            "overhead_p50_ms": res["total_ms"]["p50"] - direct["total_ms"]["p50"] if vs_direct else NAN,
            "ttfb_overhead_p50_ms": res["ttfb_ms"]["p50"] - direct["ttfb_ms"]["p50"] if vs_direct else NAN,
        }
    return out


def _generated_at(r: dict) -> str | None:
    """ISO-8601 UTC time of the run: r["generated_at"], or for raw files written before it existed,
    r["generated"] ("%Y-%m-%d %H:%M:%S %Z") when its zone is UTC or this machine's local zone."""
    if r.get("generated_at"):
        return r["generated_at"]
    stamp, _, zone = str(r.get("generated", "")).rpartition(" ")
    try:
        when = datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S")
    except ValueError:
        return None
    if zone in ("UTC", "GMT", "Z"):
        when = when.replace(tzinfo=UTC)
    elif zone in time.tzname:
        when = when.astimezone()  # naive = local time
    else:
        return None
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _round3(x: float | None) -> float | None:
    return None if x is None or x != x or x in (float("inf"), float("-inf")) else round(x, 3)


def summary_json(r: dict) -> dict:
    """bench/results.json: the machine and the gateway ÷ LiteLLM Proxy ratios of one run, from its raw
    results dict (the one in results-raw/results.json). Pure; the numbers are phase_metrics()'s, i.e. the
    table's. A ratio whose phases were skipped is null."""
    metrics = phase_metrics(r)

    def val(target: str, phase: str, name: str) -> float:
        pm = metrics.get(f"{target} | {phase}")
        return pm[name] if pm else NAN

    cpu, ns1, ns32, s1, s32 = "cpu_ms_per_req", "non-stream c=1", "non-stream c=32", "stream c=1", "stream c=32"
    mem = r.get("memory", {})
    ratios = {
        "v1_cpu_per_req_c1": _ratio(val(GW_V1, ns1, cpu), val(PROXY, ns1, cpu)),
        "v1_cpu_per_req_c32": _ratio(val(GW_V1, ns32, cpu), val(PROXY, ns32, cpu)),
        "v1_total_cpu_per_req_c32": _ratio(
            val(GW_V1, ns32, cpu) + val(GW_V1, ns32, "db_cpu_ms_per_req"), val(PROXY, ns32, cpu)
        ),
        "v1_rps_c32": _ratio(val(GW_V1, ns32, "rps"), val(PROXY, ns32, "rps")),
        # the proxy has no llm-call route: compared with its chat completion
        "llm_call_cpu_per_req_c32": _ratio(val(GW_LLM_CALL, ns32, cpu), val(PROXY, ns32, cpu)),
        "stream_cpu_per_req_c32": _ratio(val(GW_V1, s32, cpu), val(PROXY, s32, cpu)),
        "stream_ttfb_overhead_p50_c1": _ratio(
            val(GW_V1, s1, "ttfb_overhead_p50_ms"), val(PROXY, s1, "ttfb_overhead_p50_ms")
        ),
        "peak_rss": _ratio(
            mem.get("gateway", {}).get("peak_rss_mib", NAN), mem.get("proxy", {}).get("peak_rss_mib", NAN)
        ),
    }
    return {
        "generated_at": _generated_at(r),
        "machine": r.get("machine", {}),
        "ratios": {k: _round3(v) for k, v in ratios.items()},
        "pg_xacts_per_req": {
            "v1": _round3(val(GW_V1, ns32, "pg_xacts_per_req")),
            "llm_call": _round3(val(GW_LLM_CALL, ns32, "pg_xacts_per_req")),
        },
    }


def write_summary_json(r: dict) -> Path:
    path = BENCH_DIR / "results.json"
    path.write_text(json.dumps(summary_json(r), indent=2, allow_nan=False) + "\n")
    return path


def render(r: dict) -> str:
    ph = r["phases"]
    m = r["machine"]
    lines = [
        "# saas-llm benchmark: gateway vs LiteLLM Proxy vs the bare mock upstream",
        "",
        f"Generated by `make bench` (`bench/run.py`) on {r.get('generated', '?')} in {r['wall_s']:.0f} s.",
        "",
        "## Machine and versions",
        "",
        f"* {m['nproc']} CPUs ({m['cpu_model']}), {m['memory_gib']} GiB RAM, Linux {m['kernel']}, "
        f"Python {m['python']}; load average at start {' '.join(m['loadavg_start'])}, "
        f"at end {' '.join(m.get('loadavg_end', ['?']))}",
        f"* PostgreSQL {m['postgres']}, Redis {m['redis']}",
    ]
    for venv, vers in r["versions"].items():
        lines.append(f"* {venv}: " + ", ".join(f"{k} {v}" for k, v in vers.items()))
    lines += [
        f"* load generator: bench/loadgen.py on {r['client']['loop']} ({r['client']['python']}), "
        "closed loop, one keep-alive HTTP/1.1 connection per concurrent client",
        "* gateway: `uvicorn saas_llm.asgi:application --workers 1 --no-access-log`, DEBUG=0, Postgres + Redis, "
        f"LOG_LEVEL={GATEWAY_LOG_LEVEL}; every /v1 request is a whole single-call job (auth, rate limiter, job, "
        "reservation, call row, ledger charge); `llm-call` rows are calls on one long-lived job",
        "* LiteLLM Proxy: `litellm --num_workers 1`, no database, no master key, LITELLM_LOG=ERROR, "
        "same mock behind it",
        "* mock upstream: `manage.py mock_llm_server --chunks 20`, 0 ms latency (the `direct` rows)",
        "",
        "## Results",
        "",
        "Latencies in ms as seen by the client. *Overhead* = p50 minus the direct-to-mock p50 of the same "
        "phase. *CPU/req* = server process CPU time (user+sys from /proc, all threads and children) during "
        "the measured window ÷ successful requests (*of which sys* = kernel share); the gateway's Postgres backends and Redis are in a "
        "separate column (Redis is shared with the machine, so that column is approximate), with the number of "
        "Postgres transactions per request (pg_stat_database; each autocommit statement counts as one). "
        "*other CPU* = the machine's busy CPU not accounted to the server, the mock, PG/Redis or the client "
        "(background noise).",
        "",
        "| target | phase | ok | err | RPS | p50 | p99 | overhead p50 | TTFB p50 | TTFB p99 | TTFB overhead p50 "
        "| server CPU/req | of which sys | mock CPU/req | PG+Redis CPU/req | PG xacts/req | client CPU/req "
        "| other CPU (cores) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    metrics = phase_metrics(r)
    for key, res in ph.items():
        target, phase = key.split(" | ")
        pm = metrics[key]
        lines.append(
            f"| {target} | {phase} | {res['ok']} | {res['errors']} | {res['rps']:.0f} | "
            f"{_fmt(res['total_ms']['p50'])} | {_fmt(res['total_ms']['p99'])} | {_fmt(pm['overhead_p50_ms'])} | "
            f"{_fmt(res['ttfb_ms']['p50'])} | {_fmt(res['ttfb_ms']['p99'])} | {_fmt(pm['ttfb_overhead_p50_ms'])} | "
            f"{pm['cpu_ms_per_req']:.2f} | {100 * pm['sys_share']:.0f}% | "
            f"{_fmt(pm['mock_cpu_ms_per_req'])} | {_fmt(pm['db_cpu_ms_per_req'])} | "
            f"{_fmt(pm['pg_xacts_per_req'], 1)} | "
            f"{pm['client_cpu_ms_per_req']:.2f} | {pm['other_cores']:.2f} |"
        )
    if r["skipped"]:
        lines += ["", "Skipped (time budget): " + "; ".join(r["skipped"])]
    mem = r["memory"]
    lines += [
        "",
        "Memory (sum over each server's process tree): "
        + "; ".join(f"{k}: peak RSS {v['peak_rss_mib']:.0f} MiB (now {v['rss_mib']:.0f} MiB)" for k, v in mem.items()),
        "",
        "## Gateway / LiteLLM Proxy ratios vs the targets",
        "",
        "| metric | gateway | LiteLLM Proxy | gateway / proxy | target | verdict |",
        "|---|---:|---:|---:|---|---|",
    ]
    for row in ratio_rows(r):
        lines.append("| " + " | ".join(row) + " |")
    b = r.get("books")
    if b:
        lines += [
            "",
            "## Books after the run",
            "",
            f"* successful gateway requests incl. warm-up: {b['gateway_ok_requests_incl_warmup']} "
            f"→ LLM call rows {b['llm_call_rows']}, completed `chat.completions` jobs "
            f"{b['completed_chat_completions_jobs']}, ledger entries {b['ledger_entries']}; "
            f"`verify_ledger`: {b['verify_ledger']}",
        ]
    prof = r.get("profile")
    if prof and "top_self" in prof:
        lines += [
            "",
            "## Where the gateway's CPU goes (py-spy --gil, non-streaming c=32, 15 s, 100 Hz)",
            "",
            f"{prof['samples']} samples (a thread holding the GIL; % of all samples); threads: "
            + ", ".join(f"{t} {p}%" for t, p in prof["threads"]),
            "",
            "| top self time | % |",
            "|---|---:|",
            *[f"| `{f}` | {p} |" for f, p in prof["top_self"]],
            "",
            "| by package (self) | % |",
            "|---|---:|",
            *[f"| {f} | {p} |" for f, p in prof["by_package_self"]],
            "",
            "| project functions, inclusive | % |",
            "|---|---:|",
            *[f"| `{f}` | {p} |" for f, p in prof.get("project_inclusive", [])],
            "",
            "| top inclusive (any code but the server loop, asyncio, asgiref and thread scaffolding) | % |",
            "|---|---:|",
            *[f"| `{f}` | {p} |" for f, p in prof["top_inclusive"]],
        ]
    elif prof:
        lines += ["", f"Profile failed: {prof.get('error')}"]
    lines.append("")
    return "\n".join(lines)


def ratio_rows(r: dict) -> list[list[str]]:
    metrics = phase_metrics(r)
    rows = []
    specs = [
        # label, phase, phase_metrics() key, target text, comparison (ratio ok?)
        ("CPU ms / non-stream request (c=32)", "non-stream c=32", "cpu_ms_per_req", "≤ 0.5×", lambda q: q <= 0.5),
        ("CPU ms / non-stream request (c=1)", "non-stream c=1", "cpu_ms_per_req", "≤ 0.5×", lambda q: q <= 0.5),
        ("RPS non-stream c=32", "non-stream c=32", "rps", "≥ 2×", lambda q: q >= 2),
        ("RPS stream c=32", "stream c=32", "rps", "(info)", None),
        ("CPU ms / stream request (c=32)", "stream c=32", "cpu_ms_per_req", "≤ 0.5×", lambda q: q <= 0.5),
        ("CPU ms / stream request (c=1)", "stream c=1", "cpu_ms_per_req", "≤ 0.5×", lambda q: q <= 0.5),
        (
            "TTFB overhead p50 vs direct, stream c=1 (ms)",
            "stream c=1",
            "ttfb_overhead_p50_ms",
            "≤ 1×",
            lambda q: q <= 1,
        ),
        ("TTFB overhead p50 vs direct, stream c=32 (ms)", "stream c=32", "ttfb_overhead_p50_ms", "(info)", None),
    ]
    for gw_target in (GW_V1, GW_LLM_CALL):
        for label, phase, name, target, ok in specs:
            g, p = metrics.get(f"{gw_target} | {phase}"), metrics.get(f"{PROXY} | {phase}")
            if not g or not p:
                continue
            gv, pv = g[name], p[name]
            q = _ratio(gv, pv)
            verdict = "-" if ok is None else (f"met ({q:.2f}×)" if ok(q) else f"NOT met ({q:.2f}×)")
            rows.append([f"{gw_target}: {label}", _fmt(gv), _fmt(pv), f"{q:.2f}", target, verdict])
    mem = r.get("memory", {})
    if "gateway" in mem and "proxy" in mem:
        gv, pv = mem["gateway"]["peak_rss_mib"], mem["proxy"]["peak_rss_mib"]
        q = _ratio(gv, pv)
        rows.append(
            [
                "peak RSS (MiB)",
                f"{gv:.0f}",
                f"{pv:.0f}",
                f"{q:.2f}",
                "≤ 1×",
                f"met ({q:.2f}×)" if q <= 1 else f"NOT met ({q:.2f}×)",
            ]
        )
    return rows


def rerender() -> int:
    """`bench/run.py --render`: rebuild bench/results.md and bench/results.json from bench/results-raw/
    without running anything."""
    results = json.loads((RAW_DIR / "results.json").read_text())
    collapsed = RAW_DIR / "gateway-profile.collapsed.txt"
    if results.get("profile") and collapsed.exists():
        load = results["profile"].get("load")
        results["profile"] = summarize_profile(collapsed)
        if load:
            results["profile"]["load"] = load
    report = render(results)
    (BENCH_DIR / "results.md").write_text(report)
    write_summary_json(results)
    print(report)
    return 0


if __name__ == "__main__":
    if sys.argv[1:] == ["--render"]:
        sys.exit(rerender())
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        stop_all()
        sys.exit(130)
