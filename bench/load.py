"""The load generator: raw HTTP/1.1 keep-alive requests, open-loop at a rate or closed-loop.

Run as its own process (`python -m bench.load SPEC.json`), so that it never shares a core's
event loop with the server it measures. It speaks just enough HTTP for uvicorn's answers
(Content-Length bodies, keep-alive), which costs far less CPU per request than a general
client: measured here, aiohttp's client topped out below the bare endpoint it was measuring.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import uvloop


@dataclass(slots=True)
class Tally:
    """Every answer: when it was due, sent and done, its status, and whether it said `expect`."""

    due: list[float] = field(default_factory=list)
    sent: list[float] = field(default_factory=list)
    done: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    matched: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    warm: int = 0  # answers during the warm-up, not counted in the figures


class Client(asyncio.Protocol):
    """One keep-alive connection with at most one request in flight."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self.need = -1
        self.head = 0
        self.status = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass

    def connection_lost(self, exc: Exception | None) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError("closed by the server"))

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if self.need < 0:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buffer[:end]).lower()
            self.status = int(head[9:12])
            at = head.find(b"\r\ncontent-length:")
            length = int(head[at + 17 : head.find(b"\r\n", at + 2)]) if at >= 0 else 0
            self.head, self.need = end + 4, end + 4 + length
        if len(self.buffer) >= self.need and self.waiter is not None:
            body = bytes(self.buffer[self.head : self.need])
            del self.buffer[: self.need]
            self.need = -1
            self.waiter.set_result((self.status, body))

    async def send(self, request: bytes) -> tuple[int, bytes]:
        if self.transport is None:
            raise ConnectionError("not connected")
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(request)
        return await self.waiter


def build_requests(spec: dict[str, Any]) -> list[bytes]:
    host = f"127.0.0.1:{spec['port']}"
    if "paths" in spec:
        return [f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode() for path in spec["paths"]]
    from bench import payloads  # only here: it loads the simulator, which reads need not

    hooks = spec["webhooks"]
    requests = []
    for delivery, body, signature in payloads.signed_bodies(**hooks):
        head = (
            f"POST {spec['path']} HTTP/1.1\r\nHost: {host}\r\n"
            "Content-Type: application/json\r\nUser-Agent: Atlassian Webhook HTTP Client\r\n"
            f"X-Atlassian-Webhook-Identifier: {delivery}\r\n"
            f"X-Hub-Signature: sha256={signature}\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        requests.append(head.encode() + body)
    return requests


async def connect(port: int, count: int) -> list[Client]:
    loop = asyncio.get_running_loop()
    made = [loop.create_connection(Client, "127.0.0.1", port) for _ in range(count)]
    return [protocol for _, protocol in await asyncio.gather(*made)]


async def exchange(client: Client, request: bytes, due: float, tally: Tally, expect: bytes) -> None:
    sent = time.perf_counter()
    try:
        status, body = await client.send(request)
    except (ConnectionError, OSError) as exc:
        tally.errors[type(exc).__name__] += 1
        return
    tally.due.append(due)
    tally.sent.append(sent)
    tally.done.append(time.perf_counter())
    tally.statuses[status] += 1
    tally.matched += expect in body


async def open_loop(spec: dict[str, Any], requests: list[bytes], tally: Tally) -> float:
    """Send request i at start + i/rate whatever the answers do; queue when all are busy."""
    rate, count = float(spec["rate"]), min(len(requests), int(spec["rate"] * spec["duration"]))
    clients = await connect(spec["port"], spec["connections"])
    queue: deque[tuple[bytes, float]] = deque()
    wake = asyncio.Event()
    expect = spec.get("expect", "").encode()

    async def worker(client: Client) -> None:
        while True:
            while not queue:
                wake.clear()
                await wake.wait()
            request, due = queue.popleft()
            if not request:
                return
            await exchange(client, request, due, tally, expect)

    workers = [asyncio.create_task(worker(client)) for client in clients]
    start = time.perf_counter() + 0.05
    for index in range(count):
        due = start + index / rate
        if (delay := due - time.perf_counter()) > 0:
            await asyncio.sleep(delay)
        queue.append((requests[index], due))
        wake.set()
    queue.extend((b"", 0.0) for _ in workers)
    wake.set()
    await asyncio.wait_for(asyncio.gather(*workers), timeout=spec["duration"] + 30)
    return start


async def closed_loop(spec: dict[str, Any], requests: list[bytes], tally: Tally) -> float:
    """Each connection sends its next request as soon as the last is answered."""
    clients = await connect(spec["port"], spec["connections"])
    expect = spec.get("expect", "").encode()
    warm = Tally()
    start = time.perf_counter()
    counted: float = start + spec.get("warmup", 0.0)
    end = counted + spec["duration"]
    cursor = iter(range(len(requests) if spec.get("once") else 10**12))

    async def worker(client: Client) -> None:
        for index in cursor:
            now = time.perf_counter()
            if now >= end:
                return
            target = tally if now >= counted else warm
            await exchange(client, requests[index % len(requests)], now, target, expect)

    await asyncio.gather(*(worker(client) for client in clients))
    tally.warm = len(warm.done)
    return counted


def percentile(values: list[float], share: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return float(ordered[min(len(ordered) - 1, int(share * len(ordered)))])


def summary(tally: Tally, start: float, spec: dict[str, Any]) -> dict[str, Any]:
    latency = [(done - due) * 1000 for due, done in zip(tally.due, tally.done, strict=True)]
    service = [(done - sent) * 1000 for sent, done in zip(tally.sent, tally.done, strict=True)]
    lag = [(sent - due) * 1000 for due, sent in zip(tally.due, tally.sent, strict=True)]
    elapsed = (max(tally.done) - start) if tally.done else float("nan")
    return {
        "mode": spec["mode"],
        "offered_rate": spec.get("rate"),
        "connections": spec["connections"],
        "completed": len(tally.done),
        "total": len(tally.done) + tally.warm,
        "elapsed_s": round(elapsed, 3),
        "throughput": round(len(tally.done) / elapsed, 1) if tally.done else 0.0,
        "p50_ms": round(percentile(latency, 0.50), 2),
        "p90_ms": round(percentile(latency, 0.90), 2),
        "p99_ms": round(percentile(latency, 0.99), 2),
        "max_ms": round(max(latency, default=float("nan")), 2),
        "service_p99_ms": round(percentile(service, 0.99), 2),
        "queue_p50_ms": round(percentile(lag, 0.50), 2),
        "queue_p99_ms": round(percentile(lag, 0.99), 2),
        "statuses": {str(code): count for code, count in tally.statuses.items()},
        "matched": tally.matched,
        "errors": dict(tally.errors),
    }


async def warm_pass(spec: dict[str, Any], requests: list[bytes]) -> dict[str, Any]:
    """Send the first `warm_pass` requests once each, untimed, so that caches start warm;
    `warm_rounds` times, each on new connections (several workers each get their share)."""
    count = min(int(spec.get("warm_pass", 0)), len(requests))
    if not count:
        return {"requests": 0}
    rounds = int(spec.get("warm_rounds", 1))
    start = time.perf_counter()
    for _ in range(rounds):
        await _warm_once(spec, requests, count)
    elapsed = time.perf_counter() - start
    return {"requests": count * rounds, "throughput": round(count * rounds / elapsed, 1)}


async def _warm_once(spec: dict[str, Any], requests: list[bytes], count: int) -> None:
    clients = await connect(spec["port"], spec["connections"])
    cursor = iter(range(count))

    async def worker(client: Client) -> None:
        for index in cursor:
            await client.send(requests[index])

    await asyncio.gather(*(worker(client) for client in clients))
    for client in clients:
        if client.transport is not None:
            client.transport.close()


async def run(spec: dict[str, Any]) -> dict[str, Any]:
    requests = build_requests(spec)
    tally = Tally()
    mode = open_loop if spec["mode"] == "open" else closed_loop
    cpu = time.process_time()
    warm = await warm_pass(spec, requests)
    start = await mode(spec, requests, tally)
    result = summary(tally, start, spec)
    result["warm_pass"] = warm
    result["total"] += warm["requests"]
    result["generator_cpu_s"] = round(time.process_time() - cpu, 2)
    if "dump" in spec:  # for a closer look: every answer's due, sent and done times
        result["times"] = [tally.due, tally.sent, tally.done]
    return result


def main(argv: list[str]) -> int:
    spec = json.loads(Path(argv[0]).read_text())
    result = uvloop.run(run(spec))
    if "dump" in spec:
        Path(spec["dump"]).write_text(json.dumps(result.pop("times")))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
