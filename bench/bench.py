#!/usr/bin/env python3
"""Load generator for any OCI / Docker registry, modelled on zot's `zb`.

    python bench/bench.py --url http://127.0.0.1:5000 [--user U --password P]
                          [--pid PID] [--scenarios a,b] [--quick] [--json out.json]

Prints, per scenario: throughput (MB/s or req/s), latency p50/p90/p99, failures,
the load generator's own CPU use and, with --pid, the server's CPU use and peak
resident memory. Traffic goes only to the URL given; every scenario is bounded in
request count and time.

The HTTP client is a small HTTP/1.1 implementation on asyncio (uvloop when
installed): one keep-alive connection per simulated client, bodies sent from
memoryviews of one random buffer and received without being kept, so the
generator spends far less CPU per request than the server under test.
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
import math
import os
import re
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from urllib.parse import urlencode, urljoin, urlsplit

try:
    import uvloop
except ImportError:
    uvloop = None

MiB = 1 << 20
OP_TIMEOUT = 120.0
SEND_PIECE = 1 * MiB
RECV_PIECE = 1 * MiB
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
ACCEPT_MANIFESTS = ", ".join([
    OCI_MANIFEST, "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json"])


# ---------------------------------------------------------------------------
# HTTP/1.1 client
# ---------------------------------------------------------------------------

class HTTPError(Exception):
    pass


class StaleConnection(HTTPError):
    """The server closed a kept-alive connection before answering."""


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes = b""
    nbytes: int = 0

    def json(self):
        return json.loads(self.body)


class Connection:
    """One HTTP/1.1 keep-alive connection on a non-blocking socket.

    Bodies are sent straight from memoryviews and received with recv_into a
    reusable buffer, so large transfers cost one kernel copy each way."""

    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self.hostport = f"{host}:{port}"
        self.sock: socket.socket | None = None
        self.buf = bytearray()
        self.scratch = bytearray(RECV_PIECE)
        self.used = False

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        infos = await loop.getaddrinfo(self.host, self.port, type=socket.SOCK_STREAM)
        family, _, _, _, address = infos[0]
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            await loop.sock_connect(sock, address)
        except BaseException:
            sock.close()
            raise
        self.sock, self.buf, self.used = sock, bytearray(), False

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
        self.sock = None

    async def request(self, method: str, target: str, headers: dict[str, str],
                      body=None, keep_body: bool = True) -> Response:
        if self.sock is None:
            await self.open()
        reused = self.used
        self.used = True
        try:
            await self._send(method, target, headers, body)
            response = await self._receive(method, keep_body)
        except (asyncio.IncompleteReadError, ConnectionError) as e:
            self.close()
            if reused:
                raise StaleConnection(str(e)) from e
            raise HTTPError(f"{method} {target}: {e!r}") from e
        except BaseException:
            self.close()
            raise
        if response.headers.get("connection", "").lower() == "close":
            self.close()
        return response

    async def _send(self, method, target, headers, body) -> None:
        lines = [f"{method} {target} HTTP/1.1", f"Host: {self.hostport}"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        size = len(body) if body is not None else 0
        if body is not None or method in ("POST", "PUT", "PATCH"):
            lines.append(f"Content-Length: {size}")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        loop = asyncio.get_running_loop()
        if size <= 64 * 1024:
            await loop.sock_sendall(self.sock, head + bytes(body) if size else head)
        else:
            await loop.sock_sendall(self.sock, head)
            await loop.sock_sendall(self.sock, body)

    async def _fill(self) -> None:
        n = await asyncio.get_running_loop().sock_recv_into(self.sock, self.scratch)
        if not n:
            raise asyncio.IncompleteReadError(bytes(self.buf), None)
        self.buf += memoryview(self.scratch)[:n]

    async def _read_until(self, marker: bytes) -> bytes:
        while (end := self.buf.find(marker)) < 0:
            await self._fill()
        end += len(marker)
        data = bytes(self.buf[:end])
        del self.buf[:end]
        return data

    async def _receive(self, method, keep_body) -> Response:
        while True:
            block = await self._read_until(b"\r\n\r\n")
            status_line, *header_lines = block.decode("latin-1").split("\r\n")
            status = int(status_line.split(" ", 2)[1])
            if not 100 <= status < 200:
                break
        headers: dict[str, str] = {}
        for line in header_lines:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        response = Response(status, headers)
        if method == "HEAD" or status in (204, 304):
            return response
        parts: list[bytes] = []
        if headers.get("transfer-encoding", "").lower() == "chunked":
            while True:
                size = int((await self._read_until(b"\r\n")).split(b";")[0], 16)
                if size == 0:
                    await self._read_until(b"\r\n")
                    break
                response.nbytes += await self._read_exact(size, parts, keep_body)
                await self._read_until(b"\r\n")
        elif "content-length" in headers:
            response.nbytes = await self._read_exact(int(headers["content-length"]), parts, keep_body)
        else:
            try:
                while True:
                    await self._fill()
            except asyncio.IncompleteReadError:
                pass
            response.nbytes = len(self.buf)
            parts.append(bytes(self.buf))
            self.close()
        response.body = b"".join(parts) if keep_body else b""
        return response

    async def _read_exact(self, size: int, parts: list, keep: bool) -> int:
        """Consume exactly `size` body bytes: first those buffered, then straight from the socket."""
        take = min(size, len(self.buf))
        if keep:
            parts.append(bytes(self.buf[:take]))
        del self.buf[:take]
        remaining = size - take
        loop = asyncio.get_running_loop()
        view = memoryview(self.scratch)
        while remaining:
            n = await loop.sock_recv_into(self.sock, view[:min(remaining, len(view))])
            if not n:
                raise asyncio.IncompleteReadError(b"", remaining)
            remaining -= n
            if keep:
                parts.append(bytes(view[:n]))
        return size


# ---------------------------------------------------------------------------
# Authentication: Basic, or Bearer tokens per the Docker token spec
# ---------------------------------------------------------------------------

def parse_challenge(value: str) -> tuple[str, dict[str, str]]:
    scheme, _, rest = value.partition(" ")
    params = dict(re.findall(r'(\w+)="([^"]*)"', rest))
    return scheme.lower(), params


def scope_for(path: str) -> str | None:
    if path.startswith("/v2/_catalog"):
        return "registry:catalog:*"
    m = re.match(r"^/v2/(.+?)/(blobs|manifests|tags|referrers)/", path)
    return f"repository:{m.group(1)}:pull,push" if m else None


class Auth:
    """Credentials shared by all clients of one registry; tokens cached per scope."""

    def __init__(self, user: str | None, password: str | None):
        self.user, self.password = user, password
        self.scheme: str | None = None
        self.challenge: dict[str, str] = {}
        self.tokens: dict[str, str] = {}
        self.locks: dict[str, asyncio.Lock] = {}
        self.token_fetches = 0

    @property
    def basic(self) -> str:
        raw = f"{self.user}:{self.password}".encode()
        return "Basic " + base64.b64encode(raw).decode()

    def learn(self, www_authenticate: str) -> None:
        self.scheme, self.challenge = parse_challenge(www_authenticate)

    def header(self, path: str) -> str | None:
        if self.scheme == "basic" and self.user:
            return self.basic
        if self.scheme == "bearer":
            token = self.tokens.get(scope_for(path) or "")
            return f"Bearer {token}" if token else None
        return None

    async def fetch_token(self, path: str, challenge: dict[str, str], stale: str | None) -> None:
        scope = scope_for(path) or challenge.get("scope", "")
        lock = self.locks.setdefault(scope, asyncio.Lock())
        async with lock:
            if self.tokens.get(scope) not in (None, stale):
                return
            self.tokens[scope] = await self.request_token([scope] if scope else [])

    async def prefetch(self, scopes: list[str], batch: int = 50) -> None:
        """Get tokens for many scopes with few requests (several scope parameters each)."""
        if self.scheme != "bearer":
            return
        missing = [s for s in dict.fromkeys(scopes) if s not in self.tokens]
        for i in range(0, len(missing), batch):
            group = missing[i:i + batch]
            token = await self.request_token(group)
            self.tokens.update(dict.fromkeys(group, token))

    async def request_token(self, scopes: list[str]) -> str:
        realm = urlsplit(self.challenge["realm"])
        query = [("service", self.challenge.get("service", ""))] + [("scope", s) for s in scopes]
        target = (realm.path or "/") + "?" + urlencode(query)
        headers = {"Authorization": self.basic} if self.user else {}
        conn = Connection(realm.hostname, realm.port or 80)
        try:
            response = await conn.request("GET", target, headers)
        finally:
            conn.close()
        if response.status != 200:
            raise HTTPError(f"token endpoint answered {response.status}: {response.body[:200]!r}")
        data = response.json()
        self.token_fetches += 1
        return data.get("token") or data["access_token"]


class Client:
    """A simulated registry client: one connection, shared Auth."""

    def __init__(self, base_url: str, auth: Auth):
        parts = urlsplit(base_url)
        self.base = parts
        self.auth = auth
        self.conn = Connection(parts.hostname, parts.port or 80)
        self.others: dict[str, Connection] = {}

    def close(self) -> None:
        self.conn.close()
        for conn in self.others.values():
            conn.close()

    async def request(self, method: str, target: str, headers: dict | None = None,
                      body=None, keep_body: bool = True, expect=(200,)) -> Response:
        headers = dict(headers or {})
        response = None
        for attempt in range(3):
            auth = self.auth.header(target)
            if auth:
                headers["Authorization"] = auth
            try:
                response = await self.conn.request(method, target, headers, body, keep_body)
            except StaleConnection:
                continue
            if response.status != 401 or not self.auth.user:
                break
            self.auth.learn(response.headers.get("www-authenticate", ""))
            if self.auth.scheme == "bearer":
                stale = auth.split(" ", 1)[1] if auth and auth.startswith("Bearer") else None
                await self.auth.fetch_token(target, self.auth.challenge, stale)
        if response is None:
            raise HTTPError(f"{method} {target}: connection kept failing")
        if response.status in (301, 302, 303, 307, 308) and method in ("GET", "HEAD"):
            response = await self._follow(method, response.headers["location"], keep_body)
        if response.status not in expect:
            raise HTTPError(f"{method} {target} -> {response.status} {response.body[:200]!r}")
        return response

    async def _follow(self, method: str, location: str, keep_body: bool) -> Response:
        url = urlsplit(urljoin(f"{self.base.scheme}://{self.base.netloc}/", location))
        target = url.path + (f"?{url.query}" if url.query else "")
        if url.netloc == self.base.netloc:
            return await self.conn.request(method, target, {}, None, keep_body)
        conn = self.others.setdefault(url.netloc, Connection(url.hostname, url.port or 80))
        return await conn.request(method, target, {}, None, keep_body)


async def discover_auth(base_url: str, auth: Auth) -> None:
    """Learn the registry's challenge from GET /v2/ once, before any timing."""
    client = Client(base_url, auth)
    try:
        response = await client.conn.request("GET", "/v2/", {})
        if response.status == 401:
            auth.learn(response.headers.get("www-authenticate", ""))
            if not auth.user:
                raise HTTPError("registry requires credentials: pass --user/--password")
        elif response.status != 200:
            raise HTTPError(f"GET /v2/ answered {response.status}")
    finally:
        client.close()


# ---------------------------------------------------------------------------
# Registry operations
# ---------------------------------------------------------------------------

def digest_of(data) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass
class Blob:
    data: memoryview
    digest: str

    @property
    def size(self) -> int:
        return len(self.data)


class BlobFactory:
    """Distinct blobs as slices of one random buffer, each at its own offset."""

    def __init__(self, largest: int):
        self.buffer = memoryview(os.urandom(largest + 256 * 1024))
        self.largest = largest
        self.offset = 0

    def make(self, size: int) -> Blob:
        if size > self.largest or self.offset + size > len(self.buffer):
            raise ValueError("blob larger than the random buffer")
        self.offset = (self.offset + 1) % (len(self.buffer) - self.largest)
        data = self.buffer[self.offset:self.offset + size]
        return Blob(data, digest_of(data))


CONFIG_BYTES = json.dumps({"architecture": "amd64", "os": "linux",
                           "rootfs": {"type": "layers", "diff_ids": []}}).encode()
CONFIG = Blob(memoryview(CONFIG_BYTES), digest_of(CONFIG_BYTES))


def manifest_for(layer: Blob) -> bytes:
    return json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": CONFIG.digest, "size": CONFIG.size},
        "layers": [{"mediaType": OCI_LAYER, "digest": layer.digest, "size": layer.size}],
    }, separators=(",", ":")).encode()


def upload_target(location: str, **query) -> str:
    url = urlsplit(location)
    extra = urlencode(query)
    path_query = url.path + ("?" + url.query if url.query else "")
    if extra:
        path_query += ("&" if url.query else "?") + extra
    return path_query


async def start_upload(c: Client, repo: str) -> str:
    r = await c.request("POST", f"/v2/{repo}/blobs/uploads/", expect=(202,))
    return r.headers["location"]


async def push_monolithic(c: Client, repo: str, blob: Blob) -> None:
    location = await start_upload(c, repo)
    await c.request("PUT", upload_target(location, digest=blob.digest),
                    {"Content-Type": "application/octet-stream"}, blob.data, expect=(201,))


async def push_chunked(c: Client, repo: str, blob: Blob, chunk: int) -> None:
    location = await start_upload(c, repo)
    for start in range(0, blob.size, chunk):
        piece = blob.data[start:start + chunk]
        r = await c.request("PATCH", upload_target(location), {
            "Content-Type": "application/octet-stream",
            "Content-Range": f"{start}-{start + len(piece) - 1}"}, piece, expect=(202,))
        location = r.headers["location"]
    await c.request("PUT", upload_target(location, digest=blob.digest), {}, b"", expect=(201,))


async def put_manifest(c: Client, repo: str, reference: str, manifest: bytes) -> None:
    await c.request("PUT", f"/v2/{repo}/manifests/{reference}",
                    {"Content-Type": OCI_MANIFEST}, manifest, expect=(201,))


async def push_image(c: Client, repo: str, tag: str, layer: Blob, chunk: int | None = None) -> int:
    if chunk:
        await push_chunked(c, repo, layer, chunk)
    else:
        await push_monolithic(c, repo, layer)
    await put_manifest(c, repo, tag, manifest_for(layer))
    return layer.size


async def get_manifest(c: Client, repo: str, reference: str, head: bool = False) -> Response:
    return await c.request("HEAD" if head else "GET", f"/v2/{repo}/manifests/{reference}",
                           {"Accept": ACCEPT_MANIFESTS})


async def pull_image(c: Client, repo: str, tag: str) -> int:
    manifest = (await get_manifest(c, repo, tag)).json()
    total = 0
    for layer in manifest["layers"]:
        r = await c.request("GET", f"/v2/{repo}/blobs/{layer['digest']}", keep_body=False)
        if r.nbytes != layer["size"]:
            raise HTTPError(f"blob {layer['digest']}: got {r.nbytes} of {layer['size']} bytes")
        total += r.nbytes
    return total


def next_link(response: Response) -> str | None:
    m = re.search(r'<([^>]+)>\s*;\s*rel="?next"?', response.headers.get("link", ""))
    return m.group(1) if m else None


async def list_all(c: Client, target: str, key: str) -> tuple[list[str], int]:
    """Every entry of a paginated list, following Link headers; returns (items, pages)."""
    items: list[str] = []
    pages = 0
    while target:
        r = await c.request("GET", target)
        items += r.json().get(key) or []
        pages += 1
        link = next_link(r)
        target = upload_target(link) if link else None
    return items, pages


async def ensure_config(c: Client, repo: str) -> None:
    r = await c.request("HEAD", f"/v2/{repo}/blobs/{CONFIG.digest}", expect=(200, 404))
    if r.status == 404:
        await push_monolithic(c, repo, CONFIG)


# ---------------------------------------------------------------------------
# Measurement: latencies, generator CPU, server CPU and memory
# ---------------------------------------------------------------------------

CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def process_tree(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
            children.setdefault(ppid, []).append(int(entry))
    tree, todo = [], [pid]
    while todo:
        p = todo.pop()
        tree.append(p)
        todo += children.get(p, [])
    return tree


def rss_bytes(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/statm") as f:
                total += int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except OSError:
            pass
    return total


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except OSError:
            pass
    return total / CLK_TCK


def machine_busy_seconds() -> float:
    """CPU seconds spent busy by the whole machine since boot (all cores)."""
    with open("/proc/stat") as f:
        ticks = [int(x) for x in f.readline().split()[1:]]
    idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)
    return (sum(ticks[:8]) - idle) / CLK_TCK


class ServerMonitor:
    """Samples the server's resident memory every 20 ms while a scenario runs,
    and the CPU time of the server and of the whole machine."""

    def __init__(self, pid: int | None):
        self.pid = pid
        self.peak = 0
        self.cpu = 0.0
        self.machine = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self):
        self._machine0 = machine_busy_seconds()
        if self.pid:
            self.pids = process_tree(self.pid)
            self.peak = rss_bytes(self.pids)
            self._cpu0 = cpu_seconds(self.pids)
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self):
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, rss_bytes(self.pids))

    def __exit__(self, *exc):
        self.machine = machine_busy_seconds() - self._machine0
        if self._thread:
            self._stop.set()
            self._thread.join()
            self.peak = max(self.peak, rss_bytes(self.pids))
            self.cpu = cpu_seconds(self.pids) - self._cpu0


def percentile(sorted_values: list[float], p: float) -> float:
    if not sorted_values:
        return float("nan")
    index = math.ceil(p / 100 * len(sorted_values)) - 1
    return sorted_values[min(max(index, 0), len(sorted_values) - 1)]


@dataclass
class Stats:
    latencies: list[float] = field(default_factory=list)
    failures: int = 0
    errors: list[str] = field(default_factory=list)
    nbytes: int = 0
    wall: float = 0.0
    gen_cpu: float = 0.0
    srv_cpu: float = 0.0
    srv_peak: int = 0
    other_cpu: float = 0.0

    def fail(self, message: str) -> None:
        self.failures += 1
        if len(self.errors) < 3:
            self.errors.append(message[:300])

    def merge(self, other: "Stats") -> None:
        self.latencies += other.latencies
        self.failures += other.failures
        self.errors = (self.errors + other.errors)[:3]
        self.nbytes += other.nbytes
        self.wall += other.wall
        self.gen_cpu += other.gen_cpu
        self.srv_cpu += other.srv_cpu
        self.srv_peak = max(self.srv_peak, other.srv_peak)
        self.other_cpu += other.other_cpu


async def drive(clients: list[Client], op, count: int, seconds: float, pid: int | None) -> Stats:
    """Run op(client, i) for i in range(count) on len(clients) workers, at most `seconds`."""
    stats = Stats()
    next_index = 0
    deadline = time.perf_counter() + seconds

    async def worker(client: Client):
        nonlocal next_index
        while next_index < count and time.perf_counter() < deadline:
            i = next_index
            next_index += 1
            t0 = time.perf_counter()
            try:
                async with asyncio.timeout(OP_TIMEOUT):
                    moved = await op(client, i) or 0
                stats.nbytes += moved
                stats.latencies.append(time.perf_counter() - t0)
            except (HTTPError, OSError, ValueError, KeyError, asyncio.TimeoutError) as e:
                stats.fail(f"{type(e).__name__}: {e}")

    with ServerMonitor(pid) as monitor:
        cpu0, t0 = time.process_time(), time.perf_counter()
        await asyncio.gather(*(worker(c) for c in clients))
        stats.wall = time.perf_counter() - t0
        stats.gen_cpu = time.process_time() - cpu0
    stats.srv_cpu, stats.srv_peak = monitor.cpu, monitor.peak
    stats.other_cpu = max(0.0, monitor.machine - monitor.cpu - stats.gen_cpu)
    stats.latencies.sort()
    return stats


# ---------------------------------------------------------------------------
# Scenarios
# ---------------------------------------------------------------------------

SIZES = {"1M": 1 * MiB, "10M": 10 * MiB, "100M": 100 * MiB}


@dataclass
class Scenario:
    name: str
    unit: str                 # "MB/s" or "req/s"
    concurrency: int
    count: int
    quick_count: int
    params: dict = field(default_factory=dict)

    def requests(self, quick: bool) -> int:
        return self.quick_count if quick else self.count


def scenario_list() -> list[Scenario]:
    scenarios = []
    transfer = {"1M": (4, 64, 3), "10M": (2, 24, 2), "100M": (1, 4, 1)}
    for label, (conc, count, quick) in transfer.items():
        scenarios.append(Scenario(f"push-mono-{label}", "MB/s", conc, count, quick,
                                  {"size": SIZES[label]}))
    for label, (conc, count, quick) in transfer.items():
        chunk = 256 * 1024 if label == "1M" else 4 * MiB
        scenarios.append(Scenario(f"push-chunked-{label}", "MB/s", conc, count, quick,
                                  {"size": SIZES[label], "chunk": chunk}))
    for label, (conc, count, quick) in transfer.items():
        scenarios.append(Scenario(f"pull-{label}", "MB/s", conc, count * 5, quick,
                                  {"size": SIZES[label], "tag": label}))
    for method in ("head", "get"):
        for conc in (1, 16, 64):
            scenarios.append(Scenario(f"manifest-{method}-c{conc}", "req/s", conc, 3000, 64,
                                      {"head": method == "head"}))
    scenarios.append(Scenario("tags-list-10k", "req/s", 2, 200, 3, {"tags": 10_000, "quick_tags": 300}))
    scenarios.append(Scenario("catalog-1k", "req/s", 2, 200, 3, {"repos": 1_000, "quick_repos": 40}))
    scenarios.append(Scenario("login", "req/s", 4, 60, 4))
    scenarios.append(Scenario("mixed-75pull-25push", "MB/s", 8, 240, 16, {"size": MiB}))
    scenarios.append(Scenario("same-layer-20", "MB/s", 20, 3, 1,
                              {"size": 10 * MiB, "quick_size": MiB}))
    return scenarios


SCENARIOS = {s.name: s for s in scenario_list()}


def select(names: str | None) -> list[Scenario]:
    if not names:
        return list(SCENARIOS.values())
    chosen = []
    for pattern in names.split(","):
        matches = [s for s in SCENARIOS.values() if re.fullmatch(pattern.strip().replace("*", ".*"), s.name)]
        if not matches:
            raise SystemExit(f"unknown scenario {pattern!r}; known: {', '.join(SCENARIOS)}")
        chosen += [s for s in matches if s not in chosen]
    return chosen


@dataclass
class Result:
    scenario: str
    unit: str
    concurrency: int
    ops: int
    failures: int
    throughput: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    wall_s: float
    gen_cpu_pct: float
    srv_cpu_pct: float | None
    srv_peak_mib: float | None
    other_cpu_pct: float
    note: str = ""
    errors: list[str] = field(default_factory=list)
    setup_s: float = 0.0

    @classmethod
    def of(cls, scenario: Scenario, stats: Stats, pid: int | None, note: str = "") -> "Result":
        wall = stats.wall or float("nan")
        ops = len(stats.latencies)
        throughput = stats.nbytes / MiB / wall if scenario.unit == "MB/s" else ops / wall
        lat = stats.latencies
        return cls(scenario.name, scenario.unit, scenario.concurrency, ops, stats.failures,
                   throughput, percentile(lat, 50) * 1e3, percentile(lat, 90) * 1e3,
                   percentile(lat, 99) * 1e3, stats.wall, 100 * stats.gen_cpu / wall,
                   100 * stats.srv_cpu / wall if pid else None,
                   stats.srv_peak / MiB if pid else None,
                   100 * stats.other_cpu / wall if wall >= 0.5 else float("nan"),
                   note, stats.errors)


class Target:
    """One registry under test, with the state its scenarios seed once."""

    def __init__(self, url: str, user: str | None = None, password: str | None = None,
                 pid: int | None = None, name: str = ""):
        self.url = url.rstrip("/")
        self.auth = Auth(user, password)
        self.pid = pid
        self.name = name or self.url
        self.seeded: dict[str, object] = {}
        self.discovered = False

    async def clients(self, n: int) -> list[Client]:
        if not self.discovered:
            await discover_auth(self.url, self.auth)
            self.discovered = True
        clients = [Client(self.url, self.auth) for _ in range(n)]
        await asyncio.gather(*(c.request("GET", "/v2/") for c in clients))
        return clients


class Bench:
    """Runs scenarios against targets; blobs come from one shared factory."""

    def __init__(self, quick: bool = False, scenarios: list[Scenario] | None = None):
        self.quick = quick
        self.scenarios = scenarios or list(SCENARIOS.values())
        largest = max((s.params.get("size", 0) for s in self.scenarios), default=MiB)
        self.blobs = BlobFactory(max(largest, MiB))
        self.seed_concurrency = 16

    def seconds(self) -> float:
        return 4.0 if self.quick else 8.0

    async def run(self, target: Target, scenario: Scenario) -> Result:
        runner = getattr(self, "run_" + scenario.name.split("-")[0].replace("same", "same_layer"))
        t0 = time.perf_counter()
        result = await runner(target, scenario)
        result.setup_s = time.perf_counter() - t0 - result.wall_s
        return result

    async def with_clients(self, target: Target, n: int, fn):
        clients = await target.clients(n)
        try:
            return await fn(clients)
        finally:
            for c in clients:
                c.close()

    # -- seeding (untimed) --------------------------------------------------

    async def seed_image(self, target: Target, repo: str, tag: str, size: int) -> None:
        key = f"image {repo}:{tag}"
        if key in target.seeded:
            return

        async def seed(clients):
            c = clients[0]
            await ensure_config(c, repo)
            r = await c.request("HEAD", f"/v2/{repo}/manifests/{tag}",
                                {"Accept": ACCEPT_MANIFESTS}, expect=(200, 404))
            if r.status == 404:
                await push_image(c, repo, tag, self.blobs.make(size))
        await self.with_clients(target, 1, seed)
        target.seeded[key] = True

    async def seed_tags(self, target: Target, repo: str, count: int) -> None:
        key = f"tags {repo}"
        if key in target.seeded:
            return
        layer = self.blobs.make(1024)

        async def seed(clients):
            c = clients[0]
            existing = set(await self.existing(c, f"/v2/{repo}/tags/list", "tags"))
            await ensure_config(c, repo)
            await push_monolithic(c, repo, layer)
            manifest = manifest_for(layer)
            missing = [f"t{i:05d}" for i in range(count) if f"t{i:05d}" not in existing]
            await self.fan_out(clients, missing, lambda cl, tag: put_manifest(cl, repo, tag, manifest))
        await self.with_clients(target, self.seed_concurrency, seed)
        target.seeded[key] = True

    async def seed_repos(self, target: Target, prefix: str, count: int) -> None:
        key = f"repos {prefix}"
        if key in target.seeded:
            return
        layer = self.blobs.make(1024)
        manifest = manifest_for(layer)

        async def one(c: Client, repo: str):
            await push_monolithic(c, repo, CONFIG)
            await push_monolithic(c, repo, layer)
            await put_manifest(c, repo, "latest", manifest)

        async def seed(clients):
            existing = set(await self.existing(clients[0], "/v2/_catalog?n=1000", "repositories"))
            missing = [f"{prefix}{i:04d}" for i in range(count) if f"{prefix}{i:04d}" not in existing]
            await target.auth.prefetch([scope_for(f"/v2/{repo}/blobs/") for repo in missing])
            await self.fan_out(clients, missing, one)
        await self.with_clients(target, self.seed_concurrency, seed)
        target.seeded[key] = True

    async def existing(self, c: Client, target: str, key: str) -> list[str]:
        try:
            return (await list_all(c, target, key))[0]
        except HTTPError as e:
            if " -> 404 " in str(e):
                return []
            raise

    async def fan_out(self, clients: list[Client], items: list, fn) -> None:
        queue = list(reversed(items))

        async def worker(c):
            while queue:
                async with asyncio.timeout(OP_TIMEOUT):
                    await fn(c, queue.pop())
        await asyncio.gather(*(worker(c) for c in clients))

    # -- scenarios -----------------------------------------------------------

    async def run_push(self, target: Target, s: Scenario) -> Result:
        repo = "bench/push"
        n = s.requests(self.quick)
        layers = [self.blobs.make(s.params["size"]) for _ in range(n)]
        chunk = s.params.get("chunk")
        await self.with_clients(target, 1, lambda cl: ensure_config(cl[0], repo))

        async def op(c: Client, i: int) -> int:
            return await push_image(c, repo, f"{s.name}-{i}", layers[i], chunk)
        stats = await self.with_clients(
            target, s.concurrency, lambda cl: drive(cl, op, n, self.seconds(), target.pid))
        return Result.of(s, stats, target.pid)

    async def run_pull(self, target: Target, s: Scenario) -> Result:
        repo, tag = "bench/pull", s.params["tag"]
        await self.seed_image(target, repo, tag, s.params["size"])

        async def op(c: Client, i: int) -> int:
            return await pull_image(c, repo, tag)
        stats = await self.with_clients(target, s.concurrency, lambda cl: drive(
            cl, op, s.requests(self.quick), self.seconds(), target.pid))
        return Result.of(s, stats, target.pid)

    async def run_manifest(self, target: Target, s: Scenario) -> Result:
        repo = "bench/manifest"
        await self.seed_image(target, repo, "latest", 1024)
        head = s.params["head"]

        async def op(c: Client, i: int) -> int:
            await get_manifest(c, repo, "latest", head=head)
            return 0
        stats = await self.with_clients(target, s.concurrency, lambda cl: drive(
            cl, op, s.requests(self.quick), self.seconds(), target.pid))
        return Result.of(s, stats, target.pid)

    async def run_tags(self, target: Target, s: Scenario) -> Result:
        repo = "bench/tags"
        count = s.params["quick_tags" if self.quick else "tags"]
        await self.seed_tags(target, repo, count)
        seen = {}

        async def op(c: Client, i: int) -> int:
            tags, pages = await list_all(c, f"/v2/{repo}/tags/list", "tags")
            seen.update(tags=len(tags), pages=pages)
            return 0
        stats = await self.with_clients(target, s.concurrency, lambda cl: drive(
            cl, op, s.requests(self.quick), self.seconds(), target.pid))
        return Result.of(s, stats, target.pid, f"{seen.get('tags')} tags in {seen.get('pages')} page(s)")

    async def run_catalog(self, target: Target, s: Scenario) -> Result:
        count = s.params["quick_repos" if self.quick else "repos"]
        await self.seed_repos(target, "bench/cat-", count)
        seen = {}

        async def op(c: Client, i: int) -> int:
            repos, pages = await list_all(c, "/v2/_catalog?n=1000", "repositories")
            seen.update(repos=len(repos), pages=pages)
            return 0
        stats = await self.with_clients(target, s.concurrency, lambda cl: drive(
            cl, op, s.requests(self.quick), self.seconds(), target.pid))
        return Result.of(s, stats, target.pid, f"{seen.get('repos')} repos in {seen.get('pages')} page(s)")

    async def run_login(self, target: Target, s: Scenario) -> Result:
        """What `docker login` does: GET /v2/, answer the challenge (a token or Basic), GET /v2/ again."""
        async def op(c: Client, i: int) -> int:
            fresh = Client(target.url, Auth(target.auth.user, target.auth.password))
            fresh.conn = c.conn
            await fresh.request("GET", "/v2/")
            return 0
        stats = await self.with_clients(target, s.concurrency, lambda cl: drive(
            cl, op, s.requests(self.quick), self.seconds(), target.pid))
        return Result.of(s, stats, target.pid, "fresh credentials each time")

    async def run_mixed(self, target: Target, s: Scenario) -> Result:
        repo, size = "bench/mixed", s.params["size"]
        n = s.requests(self.quick)
        await self.seed_image(target, repo, "base", size)
        layers = {i: self.blobs.make(size) for i in range(n) if i % 4 == 3}

        async def op(c: Client, i: int) -> int:
            if i in layers:
                return await push_image(c, repo, f"p{i}", layers[i])
            return await pull_image(c, repo, "base")
        stats = await self.with_clients(target, s.concurrency, lambda cl: drive(
            cl, op, n, self.seconds(), target.pid))
        return Result.of(s, stats, target.pid, f"{len(layers)} pushes, {n - len(layers)} pulls")

    async def run_same_layer(self, target: Target, s: Scenario) -> Result:
        repo = "bench/same"
        size = s.params["quick_size" if self.quick else "size"]
        await self.with_clients(target, 1, lambda cl: ensure_config(cl[0], repo))
        total = Stats()
        for _ in range(s.requests(self.quick)):
            layer = self.blobs.make(size)
            manifest = manifest_for(layer)

            async def op(c: Client, i: int) -> int:
                await push_monolithic(c, repo, layer)
                await put_manifest(c, repo, f"client{i}", manifest)
                return layer.size
            stats = await self.with_clients(target, s.concurrency, lambda cl: drive(
                cl, op, s.concurrency, self.seconds(), target.pid))
            await self.with_clients(target, 1, lambda cl: self.verify_blob(cl[0], repo, layer, stats))
            total.merge(stats)
        total.latencies.sort()
        return Result.of(s, total, target.pid, f"{s.concurrency} clients x {size // MiB} MiB, verified")

    async def verify_blob(self, c: Client, repo: str, layer: Blob, stats: Stats) -> None:
        r = await c.request("GET", f"/v2/{repo}/blobs/{layer.digest}", expect=(200, 404))
        if r.status != 200 or digest_of(r.body) != layer.digest:
            stats.fail(f"stored blob {layer.digest} is missing or corrupt after concurrent pushes")


# ---------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------

def fmt(value, digits: int = 1) -> str:
    if value is None or value != value:
        return "-"
    return f"{value:.{digits}f}"


COLUMNS = ["scenario", "conc", "ops", "fail", "throughput", "p50 ms", "p90 ms", "p99 ms",
           "gen CPU%", "srv CPU%", "other CPU%", "srv peak MiB", "note"]


def result_row(r: Result) -> list[str]:
    return [r.scenario, str(r.concurrency), str(r.ops), str(r.failures),
            f"{fmt(r.throughput)} {r.unit}", fmt(r.p50_ms, 2), fmt(r.p90_ms, 2), fmt(r.p99_ms, 2),
            fmt(r.gen_cpu_pct, 0), fmt(r.srv_cpu_pct, 0), fmt(r.other_cpu_pct, 0),
            fmt(r.srv_peak_mib, 0), r.note]


def table(header: list[str], rows: list[list[str]], markdown: bool = False) -> str:
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        return "\n".join(lines)
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    render = lambda row: "  ".join(str(x).ljust(w) for x, w in zip(row, widths)).rstrip()
    return "\n".join([render(header), render(["-" * w for w in widths])] + [render(r) for r in rows])


def generator_verdict(results: list[Result]) -> str:
    """Say whether the load generator (or anything else on the machine) skewed the results."""
    judged = [r for r in results if r.wall_s >= 0.5] or results
    if not judged:
        return ""
    worst = max(judged, key=lambda r: r.gen_cpu_pct)
    verdict = ("not the bottleneck" if worst.gen_cpu_pct < 60
               else "NEAR SATURATION: results for this scenario understate the server")
    loop = "uvloop" if uvloop else "asyncio"
    lines = [f"load generator ({loop}, one process): peak {worst.gen_cpu_pct:.0f}% of one core "
             f"in {worst.scenario} -> {verdict}"]
    busy = [r for r in judged if r.other_cpu_pct > 25]
    if len(busy) > len(judged) / 10:
        lines.append(f"other processes used >25% CPU during {len(busy)} of {len(judged)} runs (max "
                     f"{max(r.other_cpu_pct for r in busy):.0f}%): a busy machine; trust ratios over absolutes")
    return "\n".join(lines)


# ---------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------

def new_event_loop_policy() -> None:
    if uvloop is not None:
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


async def run_all(target: Target, bench: Bench, echo=print) -> list[Result]:
    results = []
    for scenario in bench.scenarios:
        result = await bench.run(target, scenario)
        results.append(result)
        echo("  ".join(result_row(result)))
        for error in result.errors:
            echo(f"    error: {error}")
    return results


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", help="registry base URL, e.g. http://127.0.0.1:5000")
    p.add_argument("--user")
    p.add_argument("--password")
    p.add_argument("--pid", type=int, help="server PID: report its CPU and peak resident memory")
    p.add_argument("--scenarios", help="comma-separated names or globs (default: all); --list shows them")
    p.add_argument("--list", action="store_true", help="list scenarios and exit")
    p.add_argument("--quick", action="store_true", help="tiny counts, for smoke tests")
    p.add_argument("--json", help="write results to this file")
    p.add_argument("--markdown", action="store_true", help="print the final table as Markdown")
    args = p.parse_args(argv)
    if args.list:
        for s in SCENARIOS.values():
            unit = "rounds" if s.name.startswith("same-layer") else "ops"
            print(f"{s.name:22} concurrency {s.concurrency:<3} {s.count:>5} {unit:6} (quick {s.quick_count})")
        return 0
    if not args.url:
        p.error("--url is required")
    host = urlsplit(args.url).hostname or ""
    if not (host == "localhost" or host.startswith("127.") or host == "::1"):
        print(f"warning: {host} is not a loopback address", file=sys.stderr)
    bench = Bench(args.quick, select(args.scenarios))
    target = Target(args.url, args.user, args.password, args.pid)
    new_event_loop_policy()
    print(f"# {len(bench.scenarios)} scenario(s) against {args.url}" + (" (quick)" if args.quick else ""),
          flush=True)
    results = asyncio.run(run_all(target, bench, echo=lambda line: print(line, flush=True)))
    print()
    print(table(COLUMNS, [result_row(r) for r in results], args.markdown))
    print()
    print(generator_verdict(results))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"url": args.url, "quick": args.quick,
                       "results": [r.__dict__ for r in results]}, f, indent=2)
    return 1 if any(r.failures for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
