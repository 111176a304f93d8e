"""Database connections under ASGI: long-lived worker threads keep theirs, per-request threads don't.

Async code does its database work off the event loop in the loop's pool of worker threads
(`db_sync_to_async`). Those threads live as long as the process, so their connections persist
(CONN_MAX_AGE). Django closes stale connections only around requests in the request's own thread;
a worker thread's connection is never checked. So every hop first drops a connection that is too
old or broken (CONN_MAX_AGE, CONN_HEALTH_CHECKS): after a database restart or failover the next
query reconnects instead of failing until the process restarts.

Sync views, though, run in a thread made for their request, which ends with it. A persistent
connection opened there would linger, unused, until garbage collection — under load, one per
request, until Postgres refuses new clients. `close_request_thread_connection` closes it when the
request finishes.
"""

import functools
import threading
import time
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from asgiref.sync import sync_to_async
from django.core.signals import request_finished
from django.db import close_old_connections, connections

P = ParamSpec("P")
R = TypeVar("R")

_thread = threading.local()


# A connection idle longer than this is checked (`SELECT 1`) before it is used again: a database
# restarted or failed over meanwhile would otherwise fail the next request. Busy connections —
# under load, all of them — are not checked; an error on one marks it for a check (Django).
IDLE_CHECK_S = 1.0


def use_worker_thread_connection() -> None:
    """In a long-lived worker thread, before database work: keep this thread's connection across
    calls, but drop it first if it is too old or broken (after an error, or idle: IDLE_CHECK_S)."""
    _thread.long_lived = True
    close_old_connections()
    now = time.monotonic()
    if now - getattr(_thread, "last_used", now) > IDLE_CHECK_S:
        for connection in connections.all(initialized_only=True):
            if connection.connection is not None and not connection.is_usable():
                connection.close()
    _thread.last_used = now


def db_sync_to_async(function: Callable[P, R]):
    """Like sync_to_async(function, thread_sensitive=False), with a usable connection guaranteed."""

    @functools.wraps(function)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        use_worker_thread_connection()
        return function(*args, **kwargs)

    return sync_to_async(run, thread_sensitive=False)


def close_request_thread_connection(**kwargs) -> None:
    """request_finished: close the connections of a thread that is not a long-lived worker thread.

    A connection inside a transaction (a test's, say) is left alone.
    """
    if getattr(_thread, "long_lived", False):
        return
    for connection in connections.all(initialized_only=True):
        if not connection.in_atomic_block:
            connection.close()


request_finished.connect(close_request_thread_connection, dispatch_uid="saas_llm.db.close_request_thread_connection")
