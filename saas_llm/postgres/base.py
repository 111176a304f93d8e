"""Django's PostgreSQL backend, with deadlines a database that stops answering cannot defeat.

Postgres enforces `statement_timeout` and `lock_timeout` itself (settings.py sets them), and libpq
bounds connecting (`connect_timeout`). Nothing bounds a round trip to a server that is frozen or
cut off by a partition: the socket stays open, the kernel acknowledges what is sent, no answer
comes, and libpq has no read timeout. A request would hang until its client gave up. So:

* every round trip (query, COMMIT, ROLLBACK, health check) has a client-side deadline
  (`DB_QUERY_DEADLINE_S`, just past the server's statement_timeout): a watchdog thread shuts the
  socket down when it passes, which makes the waiting call fail at once with OperationalError;
* a connection that cannot be made, or a round trip cut off by the watchdog, opens a circuit
  breaker for `DB_BREAKER_S`: new connections and round trips of this process fail at once
  meanwhile, so the requests behind the first failure answer 503 at once instead of each waiting
  for its own timeout. A query that fails on a stale connection (after a database restart) does not
  open it: the next connection attempt decides.
"""

import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from itertools import count

from django.conf import settings
from django.db.backends.postgresql import base

Database = base.Database


class CircuitBreaker:
    def __init__(self) -> None:
        self.open_until = 0.0

    def check(self) -> None:
        if time.monotonic() < self.open_until:
            raise Database.OperationalError("database unavailable: it failed to answer moments ago")

    def trip(self) -> None:
        self.open_until = time.monotonic() + settings.DB_BREAKER_S

    def reset(self) -> None:
        self.open_until = 0.0


class Watchdog:
    """Breaks the connection of a round trip that outlives its deadline (one thread per process)."""

    TICK_S = 0.1

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: dict[int, tuple[float, int]] = {}  # id → (deadline, socket fd)
        self._ids = count()
        self._thread: threading.Thread | None = None
        self._pid = 0
        self.fired = 0

    @contextmanager
    def deadline(self, fileno: int, seconds: float) -> Iterator[None]:
        ident = next(self._ids)
        with self._lock:
            self._running[ident] = (time.monotonic() + seconds, fileno)
            if self._pid != os.getpid() or self._thread is None:  # first use, or a forked child
                self._pid = os.getpid()
                self._thread = threading.Thread(target=self._watch, name="db-watchdog", daemon=True)
                self._thread.start()
        try:
            yield
        finally:
            with self._lock:
                expired = self._running.pop(ident, None) is None
            if expired:  # cut off: the call failed (or, rarely, answered just as it was cut)
                breaker.trip()

    def _watch(self) -> None:
        while True:
            time.sleep(self.TICK_S)
            now = time.monotonic()
            # Under the lock: a round trip still registered has not returned, so its fd is still its
            # connection's socket (it cannot be closed and reused meanwhile).
            with self._lock:
                for ident, (deadline, fileno) in list(self._running.items()):
                    if deadline <= now:
                        del self._running[ident]
                        self.fired += 1
                        _shut_down(fileno)


def _shut_down(fileno: int) -> None:
    try:
        sock = socket.socket(fileno=os.dup(fileno))
    except OSError:
        return
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    finally:
        sock.close()  # closes the duplicate only


breaker = CircuitBreaker()
watchdog = Watchdog()


class DatabaseWrapper(base.DatabaseWrapper):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.execute_wrappers.append(self._guard_execute)

    @contextmanager
    def _guarded(self) -> Iterator[None]:
        breaker.check()
        seconds = settings.DB_QUERY_DEADLINE_S
        if not seconds or self.connection is None:
            yield
            return
        with watchdog.deadline(self.connection.fileno(), seconds):
            yield

    def _guard_execute(self, execute, sql, params, many, context):
        # Execute wrappers run outside Django's error translation: an open breaker must still
        # surface as django.db.OperationalError (the API's 503), not as psycopg's.
        with self.wrap_database_errors, self._guarded():
            return execute(sql, params, many, context)

    def get_new_connection(self, conn_params):
        breaker.check()
        try:
            return super().get_new_connection(conn_params)
        except Database.OperationalError:
            breaker.trip()
            raise

    def _commit(self):
        with self.wrap_database_errors, self._guarded():
            return super()._commit()

    def _rollback(self):
        with self.wrap_database_errors, self._guarded():
            return super()._rollback()

    def is_usable(self) -> bool:
        try:
            with self._guarded():
                return super().is_usable()
        except Database.Error:
            return False
