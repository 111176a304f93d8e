"""Call records the database could not take, kept on disk until it can (SPEC §5.2: no call is ever
lost from the books — a call that reached the provider is recorded once the database is back).

The record step (`jobs.gateway.save_call`) retries a failing database with backoff for
SAAS_LLM_RECORD_RETRY_S; past that, the call is written here: one JSON file per call in
SAAS_LLM_SPOOL_DIR, atomically (temporary file, fsync, rename). `replay()` records each file through
the same service — idempotent per call id, so a record whose transaction did commit before its
connection broke is not counted twice — and then deletes it. Every web process replays at start and
every SPOOL_REPLAY_INTERVAL_S while files are waiting; the Celery beat sweep does too where the
worker shares the directory. One process at a time works on a file (an exclusive flock). A file
the books refuse for good (its job is gone) moves to `rejected/` for staff: never deleted.
"""

import fcntl
import json
import logging
import os
import tempfile
import threading
import time
import uuid
from dataclasses import asdict
from pathlib import Path

from django.conf import settings
from django.core.exceptions import ObjectDoesNotExist
from django.db import DatabaseError, InterfaceError, OperationalError

from jobs import services
from jobs.services import CallRecord
from saas_llm.db import use_worker_thread_connection
from tenants.models import Team

logger = logging.getLogger(__name__)

SPOOL_REPLAY_INTERVAL_S = 5.0
UNAVAILABLE = (OperationalError, InterfaceError)


def spool_dir() -> Path:
    return Path(settings.SAAS_LLM_SPOOL_DIR)


def pending() -> list[Path]:
    directory = spool_dir()
    return sorted(directory.glob("*.json")) if directory.is_dir() else []


def save(*, team_id: str, job_id: uuid.UUID, complete_job: bool, record: CallRecord) -> Path:
    """Write one call durably (raises OSError if even the disk refuses)."""
    directory = spool_dir()
    directory.mkdir(parents=True, exist_ok=True)
    entry = {"team_id": team_id, "job_id": str(job_id), "complete_job": complete_job, "record": asdict(record)}
    path = directory / f"{record.call_id}.json"
    handle, temporary = tempfile.mkstemp(dir=directory, prefix=".", suffix=".tmp")
    try:
        with os.fdopen(handle, "w") as out:
            json.dump(entry, out, default=str)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    _fsync_directory(directory)
    return path


def _fsync_directory(directory: Path) -> None:
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def replay() -> int:
    """Record every spooled call the database takes now; returns how many were recorded. Stops at
    the first sign that the database is still unavailable (the files stay for the next round)."""
    recorded = 0
    for path in pending():
        try:
            handle = open(path, "rb")  # noqa: SIM115 - held open for the lock
        except FileNotFoundError:
            continue  # recorded by another process meanwhile
        with handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # another process is recording it
            if not path.exists():
                continue
            try:
                _record(json.load(handle))
            except UNAVAILABLE as exc:
                logger.warning("spooled calls wait: the database is still unavailable (%s)", exc)
                return recorded
            except (DatabaseError, ObjectDoesNotExist, ValueError, TypeError, KeyError) as exc:
                _reject(path, exc)
                continue
            path.unlink()
            recorded += 1
    if recorded:
        logger.info("recorded %s spooled call(s)", recorded)
    return recorded


def _record(entry: dict) -> None:
    fields = dict(entry["record"])
    fields["call_id"] = uuid.UUID(fields["call_id"])
    services.record_call(
        team=Team.objects.get(pk=entry["team_id"]),
        job_id=uuid.UUID(entry["job_id"]),
        record=CallRecord(**fields),
        complete_job=entry["complete_job"],
    )


def _reject(path: Path, exc: Exception) -> None:
    rejected = spool_dir() / "rejected"
    rejected.mkdir(exist_ok=True)
    os.replace(path, rejected / path.name)
    logger.error("spooled call %s cannot be recorded (%s): kept in %s", path.stem, exc, rejected)


def start_replayer() -> threading.Thread:
    """A daemon thread of this process: replays at once (calls spooled before a restart), then every
    SPOOL_REPLAY_INTERVAL_S while files are waiting."""

    def run() -> None:
        while True:
            try:
                if pending():
                    use_worker_thread_connection()
                    replay()
            except Exception:  # the replayer must outlive any one failure
                logger.exception("replaying spooled calls failed")
            time.sleep(SPOOL_REPLAY_INTERVAL_S)

    thread = threading.Thread(target=run, name="call-spool-replayer", daemon=True)
    thread.start()
    return thread
