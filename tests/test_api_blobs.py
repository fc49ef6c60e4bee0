import pytest
import requests

from apihelpers import assert_error, digest, push_blob, random_blob, unique_repo


@pytest.fixture
def blob(registry):
    repo = unique_repo()
    data = random_blob(1000)
    return repo, data, push_blob(registry.url, repo, data)


def test_get_blob(registry, blob):
    repo, data, d = blob
    r = requests.get(f"{registry.url}/v2/{repo}/blobs/{d}")
    assert r.status_code == 200
    assert r.content == data
    assert r.headers["Docker-Content-Digest"] == d
    assert int(r.headers["Content-Length"]) == len(data)


def test_head_blob(registry, blob):
    repo, data, d = blob
    r = requests.head(f"{registry.url}/v2/{repo}/blobs/{d}")
    assert r.status_code == 200
    assert r.content == b""
    assert r.headers["Docker-Content-Digest"] == d
    assert int(r.headers["Content-Length"]) == len(data)


def test_range_request(registry, blob):
    repo, data, d = blob
    r = requests.get(f"{registry.url}/v2/{repo}/blobs/{d}", headers={"Range": "bytes=10-19"})
    assert r.status_code == 206
    assert r.content == data[10:20]
    assert r.headers["Content-Range"] == f"bytes 10-19/{len(data)}"
    assert int(r.headers["Content-Length"]) == 10


def test_open_ended_range(registry, blob):
    repo, data, d = blob
    r = requests.get(f"{registry.url}/v2/{repo}/blobs/{d}", headers={"Range": "bytes=990-"})
    assert r.status_code == 206
    assert r.content == data[990:]
    assert r.headers["Content-Range"] == f"bytes 990-999/{len(data)}"


def test_suffix_range(registry, blob):
    repo, data, d = blob
    r = requests.get(f"{registry.url}/v2/{repo}/blobs/{d}", headers={"Range": "bytes=-7"})
    assert r.status_code == 206
    assert r.content == data[-7:]
    assert r.headers["Content-Range"] == f"bytes 993-999/{len(data)}"


def test_range_end_past_size_is_clamped(registry, blob):
    repo, data, d = blob
    r = requests.get(f"{registry.url}/v2/{repo}/blobs/{d}", headers={"Range": "bytes=995-5000"})
    assert r.status_code == 206
    assert r.content == data[995:]
    assert r.headers["Content-Range"] == f"bytes 995-999/{len(data)}"


@pytest.mark.parametrize("spec", ["bytes=1000-", "bytes=5000-6000"])
def test_unsatisfiable_range(registry, blob, spec):
    repo, data, d = blob
    r = requests.get(f"{registry.url}/v2/{repo}/blobs/{d}", headers={"Range": spec})
    assert r.status_code == 416
    assert r.headers.get("Content-Range", f"bytes */{len(data)}") == f"bytes */{len(data)}"


def test_unknown_blob(registry, blob):
    repo, _, _ = blob
    url = f"{registry.url}/v2/{repo}/blobs/{digest(b'never pushed')}"
    assert_error(requests.get(url), 404, "BLOB_UNKNOWN")
    assert requests.head(url).status_code == 404


def test_blob_only_visible_in_linked_repository(registry, blob):
    _, _, d = blob
    r = requests.get(f"{registry.url}/v2/{unique_repo()}/blobs/{d}")
    assert r.status_code == 404
    assert_error(r, 404, "BLOB_UNKNOWN", "NAME_UNKNOWN")


def test_delete_blob_unlinks_only_that_repository(registry, blob):
    repo, data, d = blob
    other = unique_repo()
    push_blob(registry.url, other, data)
    r = requests.delete(f"{registry.url}/v2/{repo}/blobs/{d}")
    assert r.status_code == 202
    assert_error(requests.get(f"{registry.url}/v2/{repo}/blobs/{d}"), 404, "BLOB_UNKNOWN")
    assert requests.head(f"{registry.url}/v2/{repo}/blobs/{d}").status_code == 404
    r = requests.get(f"{registry.url}/v2/{other}/blobs/{d}")
    assert r.status_code == 200 and r.content == data
    assert_error(requests.delete(f"{registry.url}/v2/{repo}/blobs/{d}"), 404, "BLOB_UNKNOWN")


def test_delete_unknown_blob(registry, blob):
    repo, _, _ = blob
    r = requests.delete(f"{registry.url}/v2/{repo}/blobs/{digest(b'never pushed')}")
    assert_error(r, 404, "BLOB_UNKNOWN")
