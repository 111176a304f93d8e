"""Database work from async code, off the event loop, in a pool of worker threads.

Django closes stale connections only around requests in the request's own thread; a worker
thread's connection is never checked. So every hop first drops a connection that is too old or
broken (CONN_MAX_AGE, CONN_HEALTH_CHECKS): after a database restart or failover the next query
reconnects instead of failing until the process restarts.
"""

import functools
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from asgiref.sync import sync_to_async
from django.db import close_old_connections

P = ParamSpec("P")
R = TypeVar("R")


def db_sync_to_async(function: Callable[P, R]):
    """Like sync_to_async(function, thread_sensitive=False), with a usable connection guaranteed."""

    @functools.wraps(function)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        close_old_connections()
        return function(*args, **kwargs)

    return sync_to_async(run, thread_sensitive=False)
