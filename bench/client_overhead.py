#!/usr/bin/env python3
"""Measure the load generator's CPU cost per request for candidate HTTP clients.

    python bench/client_overhead.py --url http://127.0.0.1:5000/v2/ [--requests 3000] [--concurrency 16]

Each client sends the same bounded number of GETs to one loopback URL; the table shows
wall time, CPU seconds of this process and CPU microseconds per request. bench.py uses
the cheapest (its own asyncio socket client).
"""
from __future__ import annotations

import argparse
import asyncio
import http.client
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402


def measure(name: str, fn, requests: int) -> tuple[str, float, float, float]:
    cpu0, t0 = time.process_time(), time.perf_counter()
    fn()
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    return name, wall, cpu, cpu / requests * 1e6


def raw_client(url: str, requests: int, concurrency: int, use_uvloop: bool):
    def run():
        async def main():
            target = bench.Target(url.split("/v2")[0])
            clients = await target.clients(concurrency)

            async def op(c, i):
                await c.request("GET", urlsplit(url).path)
            await bench.drive(clients, op, requests, 60, None)
            for c in clients:
                c.close()
        if use_uvloop and bench.uvloop:
            bench.uvloop.run(main())
        else:
            asyncio.run(main())
    return run


def httpx_client(url: str, requests: int, concurrency: int):
    def run():
        import httpx

        async def main():
            limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
            async with httpx.AsyncClient(limits=limits) as client:
                remaining = iter(range(requests))

                async def worker():
                    for _ in remaining:
                        (await client.get(url)).read()
                await asyncio.gather(*(worker() for _ in range(concurrency)))
        asyncio.run(main())
    return run


def threaded_http_client(url: str, requests: int, concurrency: int):
    def run():
        parts = urlsplit(url)
        remaining = iter(range(requests))
        lock = threading.Lock()

        def worker():
            conn = http.client.HTTPConnection(parts.hostname, parts.port)
            while True:
                with lock:
                    if next(remaining, None) is None:
                        break
                conn.request("GET", parts.path)
                conn.getresponse().read()
            conn.close()
        threads = [threading.Thread(target=worker) for _ in range(concurrency)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    return run


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--url", required=True)
    p.add_argument("--requests", type=int, default=3000)
    p.add_argument("--concurrency", type=int, default=16)
    a = p.parse_args()
    candidates = [
        ("bench.py socket client, asyncio", raw_client(a.url, a.requests, a.concurrency, False)),
        ("bench.py socket client, uvloop", raw_client(a.url, a.requests, a.concurrency, True)),
        ("httpx AsyncClient, asyncio", httpx_client(a.url, a.requests, a.concurrency)),
        ("http.client in threads", threaded_http_client(a.url, a.requests, a.concurrency)),
    ]
    rows = []
    for name, fn in candidates:
        if "uvloop" in name and not bench.uvloop:
            continue
        n, wall, cpu, per = measure(name, fn, a.requests)
        rows.append([n, f"{wall:.2f}", f"{cpu:.2f}", f"{per:.0f}", f"{a.requests / wall:.0f}"])
    print(bench.table(["client", "wall s", "CPU s", "CPU us/req", "req/s"], rows))


if __name__ == "__main__":
    main()
