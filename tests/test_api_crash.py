import hashlib
import re
import subprocess
import threading
import time

import pytest
import requests

from apihelpers import (OCI_MANIFEST, absolute, digest, encode, image_manifest, patch_chunk,
                        push_blob, push_image, random_blob, start_upload, unique_repo, walk_pages,
                        with_query)
from conftest import OPEN_CONFIG, Registry

OCTET = {"Content-Type": "application/octet-stream"}


@pytest.fixture
def reg(make_registry):
    return make_registry(OPEN_CONFIG)


def upload_status(registry, location) -> tuple[int, str]:
    r = requests.get(location)
    assert r.status_code == 204, (r.status_code, r.text)
    end = int(r.headers["Range"].split("-")[1])
    offset = 0 if r.headers["Range"] == "0-0" else end + 1  # "0-0" is how an empty upload reads
    return offset, absolute(registry.url, r.headers["Location"])


def patch(registry, location, chunk, start) -> str:
    r = patch_chunk(location, chunk, start)
    assert r.status_code == 202, (r.status_code, r.text)
    return absolute(registry.url, r.headers["Location"])


def finish(registry, repo, location, data):
    offset, location = upload_status(registry, location)
    assert 0 <= offset <= len(data)
    rest = {**OCTET, "Content-Range": f"{offset}-{len(data) - 1}"} if offset < len(data) else {}
    r = requests.put(with_query(location, digest=digest(data)), data=data[offset:], headers=rest)
    assert r.status_code == 201, (r.status_code, r.text)
    r = requests.get(f"{registry.url}/v2/{repo}/blobs/{digest(data)}")
    assert r.status_code == 200 and r.content == data


def stored_blobs_are_whole(registry):
    for path in (registry.data / "blobs").glob("*/*/*"):
        alg = path.parent.parent.name
        if re.fullmatch(r"[0-9a-f]{64}|[0-9a-f]{128}", path.name):
            assert hashlib.new(alg, path.read_bytes()).hexdigest() == path.name, path


def every_tag_is_complete(registry):
    for page in walk_pages(registry.url, "/v2/_catalog"):
        for repo in page.json()["repositories"]:
            for tag in requests.get(f"{registry.url}/v2/{repo}/tags/list").json()["tags"] or []:
                r = requests.get(f"{registry.url}/v2/{repo}/manifests/{tag}",
                                 headers={"Accept": OCI_MANIFEST})
                assert r.status_code == 200, (repo, tag)
                assert r.headers["Docker-Content-Digest"] == digest(r.content)
                r.json()


def slow_body(data: bytes, sent: threading.Event, release: threading.Event):
    yield data[: len(data) // 2]
    sent.set()
    release.wait(30)
    yield data[len(data) // 2:]


def send_in_thread(method, url, body, headers):
    def run():
        try:
            requests.request(method, url, data=body, headers=headers, timeout=60)
        except requests.RequestException:
            pass
    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def test_upload_survives_restart(reg):
    repo, data = unique_repo(), random_blob(300_000)
    location = patch(reg, start_upload(reg.url, repo), data[:100_000], 0)
    location = patch(reg, location, data[100_000:200_000], 100_000)
    reg.restart()
    offset, location = upload_status(reg, location)
    assert offset == 200_000
    location = patch(reg, location, data[200_000:], 200_000)
    r = requests.put(with_query(location, digest=digest(data)))
    assert r.status_code == 201
    assert requests.get(f"{reg.url}/v2/{repo}/blobs/{digest(data)}").content == data


def kill_mid_request(reg, method: str, url: str, data: bytes, headers: dict) -> None:
    """Send part of a body, kill -9 the server, let the client end, restart."""
    sent, release = threading.Event(), threading.Event()
    t = send_in_thread(method, url, slow_body(data, sent, release), headers)
    assert sent.wait(30)
    time.sleep(0.5)
    reg.kill()
    release.set()
    t.join(60)
    reg.start()


def test_kill_during_chunked_upload(reg):
    repo, data = unique_repo(), random_blob(4_000_000)
    location = patch(reg, start_upload(reg.url, repo), data[:1_000_000], 0)
    kill_mid_request(reg, "PATCH", location, data[1_000_000:],
                     {**OCTET, "Content-Range": f"1000000-{len(data) - 1}"})
    assert requests.head(f"{reg.url}/v2/{repo}/blobs/{digest(data)}").status_code == 404
    stored_blobs_are_whole(reg)
    assert upload_status(reg, location)[0] >= 1_000_000
    finish(reg, repo, location, data)


def test_kill_during_monolithic_put(reg):
    repo, data = unique_repo(), random_blob(4_000_000)
    location = start_upload(reg.url, repo)
    kill_mid_request(reg, "PUT", with_query(location, digest=digest(data)), data, OCTET)
    assert requests.head(f"{reg.url}/v2/{repo}/blobs/{digest(data)}").status_code == 404
    stored_blobs_are_whole(reg)
    finish(reg, repo, location, data)


def test_kill_during_manifest_push(reg):
    repo = unique_repo()
    old, old_body = push_image(reg.url, repo, "v1")
    config = b'{"architecture":"amd64","os":"linux"}'
    push_blob(reg.url, repo, config)
    new_body = encode(image_manifest(
        {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest(config),
         "size": len(config)}, [], annotations={"pad": "x" * 2_000_000}))
    kill_mid_request(reg, "PUT", f"{reg.url}/v2/{repo}/manifests/v1", new_body,
                     {"Content-Type": OCI_MANIFEST})
    r = requests.get(f"{reg.url}/v2/{repo}/manifests/v1", headers={"Accept": OCI_MANIFEST})
    assert r.status_code == 200
    assert r.content == old_body
    assert r.headers["Docker-Content-Digest"] == old
    assert requests.get(f"{reg.url}/v2/{repo}/manifests/{digest(new_body)}").status_code == 404
    every_tag_is_complete(reg)
    stored_blobs_are_whole(reg)


def test_second_server_on_same_data_refuses(reg, tmp_path):
    push_image(reg.url, unique_repo(), "v1")
    second = Registry(tmp_path, OPEN_CONFIG)
    second.data = reg.data
    second.start(wait=False)
    try:
        code = second.proc.wait(30)
    except subprocess.TimeoutExpired:
        code = None
    finally:
        second.stop()
    assert code not in (0, None), "second server did not refuse the data directory"
    log = second.logs().lower()
    assert "lock" in log or str(reg.data).lower() in log, log
    assert requests.get(reg.url + "/v2/").status_code == 200
    every_tag_is_complete(reg)
