import hashlib
import shutil
import threading
import time

import requests

from apihelpers import random_blob, rss_kib, start_upload, unique_repo, with_query
from conftest import OPEN_CONFIG

OCTET = {"Content-Type": "application/octet-stream"}
CHUNK = 1 << 20
BIG = 2 << 30


class BigBody:
    """A 2 GiB body, read in pieces, made from one random MiB repeated."""

    def __init__(self, block: bytes):
        self.block, self.pos = block, 0

    def __len__(self):
        return BIG

    def read(self, n=-1):
        if self.pos >= BIG:
            return b""
        n = CHUNK if n is None or n < 0 else min(n, CHUNK)
        start = self.pos % CHUNK
        piece = self.block[start:start + n]
        piece = piece[: BIG - self.pos]
        self.pos += len(piece)
        return piece


def test_two_gib_blob_streams(make_registry):
    reg = make_registry(OPEN_CONFIG)
    pid = reg.proc.pid
    requests.get(reg.url + "/v2/")
    block = random_blob(CHUNK)
    h = hashlib.sha256()
    for _ in range(BIG // CHUNK):
        h.update(block)
    d = "sha256:" + h.hexdigest()
    repo = unique_repo()
    start_rss, start_hwm = rss_kib(pid), rss_kib(pid, "VmHWM")
    peak = [start_rss]
    done = threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], rss_kib(pid))
            time.sleep(0.1)
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        location = start_upload(reg.url, repo)
        r = requests.put(with_query(location, digest=d), data=BigBody(block), headers=OCTET)
        assert r.status_code == 201, r.text
        got = hashlib.sha256()
        with requests.get(f"{reg.url}/v2/{repo}/blobs/{d}", stream=True) as r:
            assert r.status_code == 200
            assert int(r.headers["Content-Length"]) == BIG
            for piece in r.iter_content(CHUNK):
                got.update(piece)
        assert "sha256:" + got.hexdigest() == d
        if rss_kib(pid, "VmHWM") > start_hwm:
            peak[0] = max(peak[0], rss_kib(pid, "VmHWM"))
    finally:
        done.set()
        sampler.join()
        reg.stop()
        shutil.rmtree(reg.data, ignore_errors=True)
    assert peak[0] - start_rss < 100 * 1024, (start_rss, peak[0])
