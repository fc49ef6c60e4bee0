import time

import requests

from apihelpers import (assert_error, digest, patch_chunk, push_blob, random_blob,
                        start_upload, unique_repo, with_query)
from conftest import OPEN_CONFIG

OCTET = {"Content-Type": "application/octet-stream"}


def test_max_blob_size(make_registry):
    reg = make_registry(OPEN_CONFIG + "\n[registry]\nmax_blob_size = 10000\n")
    repo = unique_repo()
    push_blob(reg.url, repo, random_blob(10_000))
    data = random_blob(20_000)
    d = digest(data)
    r = requests.post(with_query(f"{reg.url}/v2/{repo}/blobs/uploads/", digest=d), data=data,
                      headers=OCTET)
    assert r.status_code in (400, 413)
    assert_error(r, r.status_code, *(["SIZE_INVALID"] if r.status_code == 400 else []))
    r = patch_chunk(start_upload(reg.url, repo), data, 0)
    assert r.status_code in (400, 413)
    assert_error(r, r.status_code)
    r = requests.patch(start_upload(reg.url, repo), headers=OCTET,
                       data=(data[i:i + 4096] for i in range(0, len(data), 4096)))
    assert r.status_code in (400, 413)
    assert_error(r, r.status_code)
    assert requests.head(f"{reg.url}/v2/{repo}/blobs/{d}").status_code == 404
    assert not list((reg.data / "blobs").rglob(d.split(":")[1]))


def test_stale_uploads_purged(make_registry):
    reg = make_registry(OPEN_CONFIG + "\n[registry]\nupload_max_age = 1\n"
                        "upload_purge_interval = 1\n")
    location = start_upload(reg.url, unique_repo())
    assert patch_chunk(location, b"partial", 0).status_code == 202
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and requests.get(location).status_code == 204:
        time.sleep(0.25)
    assert_error(requests.get(location), 404, "BLOB_UPLOAD_UNKNOWN")
    uploads = reg.data / "uploads"
    assert not uploads.exists() or not any(uploads.iterdir())
