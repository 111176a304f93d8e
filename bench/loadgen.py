"""Closed-loop HTTP/1.1 load generator for `bench/run.py` (stdlib only; uses uvloop when importable).

Each of ``--concurrency`` workers owns one keep-alive connection and sends the next request as soon as
the previous response has been read completely (closed loop). The HTTP client is hand-written on
asyncio streams — one ``read()`` per batch of bytes, a minimal header parser, a chunked-encoding
state machine — so that the client, which shares the machine with the servers, costs as little CPU
as possible and does not cap the request rate.

Protocol with the orchestrator (so that server CPU is sampled around the measured window only):
    1. connect and run the warm-up, then print ``ready`` on stdout;
    2. wait for one line on stdin;
    3. run the measured phase and print one JSON object (latencies in ms) on stdout.

Usage: loadgen.py --url http://127.0.0.1:P/v1/chat/completions --body-file F [--header 'K: V']
                  [--concurrency N] (--requests N | --duration S) [--warmup N] [--stream]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from urllib.parse import urlsplit

try:  # optional: a faster event loop for the client when the interpreter has it
    import uvloop  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover - depends on the interpreter
    uvloop = None

perf = time.perf_counter


class HttpError(Exception):
    pass


class Connection:
    """One keep-alive HTTP/1.1 connection that sends a fixed request and reads whole responses."""

    def __init__(self, host: str, port: int, request: bytes):
        self.host, self.port, self.request = host, port, request
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def connect(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port, limit=1 << 20)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    async def roundtrip(self) -> tuple[int, float, float]:
        """Send the request; return (status, ms to the first body byte, ms to the end of the body)."""
        if self.writer is None:
            await self.connect()
        reader, writer = self.reader, self.writer
        t0 = perf()
        writer.write(self.request)
        buf = b""
        while True:
            idx = buf.find(b"\r\n\r\n")
            if idx >= 0:
                break
            data = await reader.read(65536)
            if not data:
                raise HttpError("connection closed before the response headers")
            buf += data
        head = buf[:idx]
        body = buf[idx + 4 :]
        t_first = perf() if body else 0.0
        status = int(head[9:12])
        length = -1
        chunked = False
        close = False
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding" and b"chunked" in value.lower():
                chunked = True
            elif name == b"connection" and b"close" in value.lower():
                close = True
        if chunked:
            pos = 0  # start of the next chunk-size line in `body`
            seen_data = False
            while True:
                # consume every complete chunk in the buffer
                while True:
                    eol = body.find(b"\r\n", pos)
                    if eol < 0:
                        break
                    size = int(body[pos:eol].split(b";", 1)[0], 16)
                    if size == 0:
                        # last chunk: (no trailers expected) then the final CRLF
                        if len(body) >= eol + 4:
                            pos = -1
                        break
                    end = eol + 2 + size + 2
                    if len(body) < end:
                        break
                    if not seen_data:
                        seen_data = True
                        t_first = perf()
                    pos = end
                if pos < 0:
                    break
                data = await reader.read(65536)
                if not data:
                    raise HttpError("connection closed inside a chunked body")
                if pos > 4096:  # keep the buffer short
                    body = body[pos:]
                    pos = 0
                body += data
        elif length >= 0:
            got = len(body)
            while got < length:
                data = await reader.read(65536)
                if not data:
                    raise HttpError("connection closed inside the body")
                if not t_first:
                    t_first = perf()
                got += len(data)
        else:  # read until close
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                if not t_first:
                    t_first = perf()
            close = True
        t_end = perf()
        if close:
            self.close()
        if not t_first:
            t_first = t_end
        return status, (t_first - t0) * 1000.0, (t_end - t0) * 1000.0


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    k = (len(sorted_values) - 1) * q
    lo = int(k)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (k - lo)


def summary(values: list[float]) -> dict:
    s = sorted(values)
    return {
        "p50": percentile(s, 0.50),
        "p90": percentile(s, 0.90),
        "p99": percentile(s, 0.99),
        "mean": sum(s) / len(s) if s else float("nan"),
        "max": s[-1] if s else float("nan"),
    }


async def worker(conn: Connection, deadline: float, budget: list[int], out: dict) -> None:
    while True:
        if budget[0] <= 0 or perf() >= deadline:
            return
        budget[0] -= 1
        try:
            status, ttfb, total = await conn.roundtrip()
        except (OSError, HttpError, ValueError, asyncio.IncompleteReadError) as exc:
            out["errors"] += 1
            key = type(exc).__name__ + ": " + str(exc)[:120]
            out["error_samples"][key] = out["error_samples"].get(key, 0) + 1
            conn.close()
            continue
        if status != 200:
            out["errors"] += 1
            key = f"HTTP {status}"
            out["error_samples"][key] = out["error_samples"].get(key, 0) + 1
            continue
        out["ttfb"].append(ttfb)
        out["total"].append(total)


async def run_phase(conns: list[Connection], requests: int | None, duration: float | None) -> dict:
    out: dict = {"ttfb": [], "total": [], "errors": 0, "error_samples": {}}
    budget = [requests if requests else 1 << 62]
    deadline = perf() + duration if duration else float("inf")
    c0 = os.times()
    t0 = perf()
    await asyncio.gather(*(worker(c, deadline, budget, out) for c in conns))
    elapsed = perf() - t0
    c1 = os.times()
    ok = len(out["total"])
    return {
        "ok": ok,
        "errors": out["errors"],
        "error_samples": out["error_samples"],
        "elapsed_s": elapsed,
        "rps": ok / elapsed if elapsed > 0 else 0.0,
        "total_ms": summary(out["total"]),
        "ttfb_ms": summary(out["ttfb"]),
        "client_cpu_s": (c1.user - c0.user) + (c1.system - c0.system),
    }


def build_request(url: str, body: bytes, headers: list[str]) -> tuple[str, int, bytes]:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    lines = [
        f"POST {path} HTTP/1.1",
        f"Host: {host}:{port}",
        "Content-Type: application/json",
        "Accept: */*",
        f"Content-Length: {len(body)}",
        *headers,
    ]
    return host, port, ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def main_async(args: argparse.Namespace) -> None:
    body = open(args.body_file, "rb").read()
    host, port, request = build_request(args.url, body, args.header)
    conns = [Connection(host, port, request) for _ in range(args.concurrency)]
    await asyncio.gather(*(c.connect() for c in conns))
    warm = await run_phase(conns, args.warmup, args.warmup_seconds) if args.warmup else None
    print("ready", flush=True)
    if not args.no_wait:
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    result = await run_phase(conns, args.requests, args.duration)
    result["concurrency"] = args.concurrency
    result["stream"] = args.stream
    result["event_loop"] = "uvloop" if uvloop is not None else "asyncio"
    result["warmup"] = {"ok": warm["ok"], "errors": warm["errors"]} if warm else {"ok": 0, "errors": 0}
    for c in conns:
        c.close()
    print(json.dumps(result), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--body-file", required=True)
    parser.add_argument("--header", action="append", default=[])
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--requests", type=int, default=None, help="stop after N requests (all workers)")
    parser.add_argument("--duration", type=float, default=None, help="stop after S seconds")
    parser.add_argument("--warmup", type=int, default=0, help="unmeasured requests before 'ready'")
    parser.add_argument("--warmup-seconds", type=float, default=5.0, help="cap on the warm-up's duration")
    parser.add_argument("--stream", action="store_true", help="informational: the body asks for a stream")
    parser.add_argument("--no-wait", action="store_true", help="do not wait for a line on stdin")
    args = parser.parse_args()
    if not args.requests and not args.duration:
        parser.error("give --requests and/or --duration")
    if uvloop is not None:
        uvloop.run(main_async(args))
    else:
        asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
