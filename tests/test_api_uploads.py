import pytest
import requests

from apihelpers import (absolute, assert_error, digest, patch_chunk, push_blob, random_blob,
                        start_upload, unique_repo, with_query)

OCTET = {"Content-Type": "application/octet-stream"}


def assert_stored(registry, repo, data, d):
    r = requests.get(f"{registry.url}/v2/{repo}/blobs/{d}")
    assert r.status_code == 200
    assert r.content == data
    assert r.headers["Docker-Content-Digest"] == d


def test_single_post_monolithic(registry):
    repo, data = unique_repo(), random_blob(5000)
    d = digest(data)
    r = requests.post(with_query(f"{registry.url}/v2/{repo}/blobs/uploads/", digest=d),
                      data=data, headers=OCTET)
    assert r.status_code == 201
    assert r.headers["Docker-Content-Digest"] == d
    assert requests.get(absolute(registry.url, r.headers["Location"])).content == data
    assert_stored(registry, repo, data, d)


def test_post_then_put(registry):
    repo, data = unique_repo(), random_blob(5000)
    d = digest(data)
    r = requests.post(f"{registry.url}/v2/{repo}/blobs/uploads/")
    assert r.status_code == 202
    location = absolute(registry.url, r.headers["Location"])
    assert r.headers["Docker-Upload-UUID"] in location
    r = requests.put(with_query(location, digest=d), data=data, headers=OCTET)
    assert r.status_code == 201
    assert r.headers["Docker-Content-Digest"] == d
    assert requests.get(absolute(registry.url, r.headers["Location"])).content == data
    assert_stored(registry, repo, data, d)


def test_streamed_patch_without_content_range(registry):
    repo, data = unique_repo(), random_blob(300_000)
    d = digest(data)
    location = start_upload(registry.url, repo)
    r = requests.patch(location, data=(data[i:i + 65536] for i in range(0, len(data), 65536)),
                       headers=OCTET)
    assert r.status_code == 202
    assert r.headers["Range"] == f"0-{len(data) - 1}"
    r = requests.put(with_query(absolute(registry.url, r.headers["Location"]), digest=d))
    assert r.status_code == 201
    assert_stored(registry, repo, data, d)


def test_chunked_upload(registry):
    repo, data = unique_repo(), random_blob(250)
    d = digest(data)
    location = start_upload(registry.url, repo)
    for start in (0, 100, 200):
        r = patch_chunk(location, data[start:start + 100], start)
        assert r.status_code == 202
        assert r.headers["Range"] == f"0-{min(start + 100, len(data)) - 1}"
        assert r.headers["Docker-Upload-UUID"]
        location = absolute(registry.url, r.headers["Location"])
    r = requests.put(with_query(location, digest=d), headers={"Content-Length": "0"})
    assert r.status_code == 201
    assert r.headers["Docker-Content-Digest"] == d
    assert_stored(registry, repo, data, d)


def test_out_of_order_chunk(registry):
    repo, data = unique_repo(), random_blob(300)
    r = patch_chunk(start_upload(registry.url, repo), data[:100], 0)
    assert r.status_code == 202
    location = absolute(registry.url, r.headers["Location"])
    assert patch_chunk(location, data[150:250], 150).status_code == 416
    assert patch_chunk(location, data[50:150], 50).status_code == 416
    r = requests.get(location)
    assert r.status_code == 204
    assert r.headers["Range"] == "0-99"


def test_first_chunk_must_start_at_zero(registry):
    location = start_upload(registry.url, unique_repo())
    assert patch_chunk(location, b"x" * 10, 5).status_code == 416


def test_upload_status(registry):
    repo, data = unique_repo(), random_blob(100)
    r = patch_chunk(start_upload(registry.url, repo), data, 0)
    r = requests.get(absolute(registry.url, r.headers["Location"]))
    assert r.status_code == 204
    assert r.headers["Range"] == "0-99"
    assert r.headers["Location"]
    assert r.headers["Docker-Upload-UUID"] in absolute(registry.url, r.headers["Location"])


def test_final_put_carries_last_chunk(registry):
    repo, data = unique_repo(), random_blob(250)
    d = digest(data)
    location = start_upload(registry.url, repo)
    r = patch_chunk(location, data[:100], 0)
    location = absolute(registry.url, r.headers["Location"])
    r = requests.put(with_query(location, digest=d), data=data[100:],
                     headers={**OCTET, "Content-Range": f"100-{len(data) - 1}"})
    assert r.status_code == 201
    assert_stored(registry, repo, data, d)


def test_final_put_chunk_out_of_order(registry):
    repo, data = unique_repo(), random_blob(250)
    location = start_upload(registry.url, repo)
    r = patch_chunk(location, data[:100], 0)
    location = absolute(registry.url, r.headers["Location"])
    r = requests.put(with_query(location, digest=digest(data)), data=data[150:],
                     headers={**OCTET, "Content-Range": f"150-{len(data) - 1}"})
    assert r.status_code == 416
    assert requests.head(f"{registry.url}/v2/{repo}/blobs/{digest(data)}").status_code == 404


def test_cancel_upload(registry):
    repo = unique_repo()
    r = patch_chunk(start_upload(registry.url, repo), b"abc", 0)
    location = absolute(registry.url, r.headers["Location"])
    assert requests.delete(location).status_code == 204
    assert_error(requests.get(location), 404, "BLOB_UPLOAD_UNKNOWN")
    assert_error(patch_chunk(location, b"def", 3), 404, "BLOB_UPLOAD_UNKNOWN")


def test_unknown_upload(registry):
    repo = unique_repo()
    push_blob(registry.url, repo, random_blob())
    url = f"{registry.url}/v2/{repo}/blobs/uploads/00000000-0000-4000-8000-000000000000"
    assert_error(requests.get(url), 404, "BLOB_UPLOAD_UNKNOWN")
    assert_error(requests.put(with_query(url, digest=digest(b""))), 404, "BLOB_UPLOAD_UNKNOWN")


def test_digest_mismatch_on_put(registry):
    repo, data = unique_repo(), random_blob(200)
    wrong = digest(b"something else")
    location = start_upload(registry.url, repo)
    r = requests.put(with_query(location, digest=wrong), data=data, headers=OCTET)
    assert_error(r, 400, "DIGEST_INVALID")
    assert requests.head(f"{registry.url}/v2/{repo}/blobs/{wrong}").status_code == 404
    assert requests.head(f"{registry.url}/v2/{repo}/blobs/{digest(data)}").status_code == 404


def test_digest_mismatch_on_single_post(registry):
    repo, data = unique_repo(), random_blob(200)
    wrong = digest(b"something else")
    r = requests.post(with_query(f"{registry.url}/v2/{repo}/blobs/uploads/", digest=wrong),
                      data=data, headers=OCTET)
    assert_error(r, 400, "DIGEST_INVALID")
    assert requests.head(f"{registry.url}/v2/{repo}/blobs/{wrong}").status_code == 404
    assert requests.head(f"{registry.url}/v2/{repo}/blobs/{digest(data)}").status_code == 404


def test_sha512_chunked_upload(registry):
    repo, data = unique_repo(), random_blob(3000)
    d = digest(data, "sha512")
    location = start_upload(registry.url, repo, **{"digest-algorithm": "sha512"})
    r = patch_chunk(location, data, 0)
    assert r.status_code == 202
    r = requests.put(with_query(absolute(registry.url, r.headers["Location"]), digest=d))
    assert r.status_code == 201
    assert r.headers["Docker-Content-Digest"] == d
    assert_stored(registry, repo, data, d)


def test_sha512_single_post(registry):
    repo, data = unique_repo(), random_blob(3000)
    d = digest(data, "sha512")
    r = requests.post(with_query(f"{registry.url}/v2/{repo}/blobs/uploads/", digest=d),
                      data=data, headers=OCTET)
    assert r.status_code == 201
    assert r.headers["Docker-Content-Digest"] == d
    assert_stored(registry, repo, data, d)


def test_sha512_monolithic_put(registry):
    repo, data = unique_repo(), random_blob(3000)
    d = digest(data, "sha512")
    location = start_upload(registry.url, repo)
    r = requests.put(with_query(location, digest=d), data=data, headers=OCTET)
    assert r.status_code == 201
    assert r.headers["Docker-Content-Digest"] == d
    assert_stored(registry, repo, data, d)


BAD_DIGESTS = ["sha256:xyz", "sha256:" + "0" * 63, "sha256:" + "A" * 64, "md5:" + "0" * 32,
               "sha512:" + "0" * 64, "nodigest", "sha256:", ":" + "0" * 64]


@pytest.mark.parametrize("bad", BAD_DIGESTS)
def test_malformed_digest_on_single_post(registry, bad):
    r = requests.post(with_query(f"{registry.url}/v2/{unique_repo()}/blobs/uploads/", digest=bad),
                      data=b"data", headers=OCTET)
    assert_error(r, 400, "DIGEST_INVALID")


@pytest.mark.parametrize("bad", BAD_DIGESTS)
def test_malformed_digest_on_put(registry, bad):
    location = start_upload(registry.url, unique_repo())
    r = requests.put(with_query(location, digest=bad), data=b"data", headers=OCTET)
    assert_error(r, 400, "DIGEST_INVALID")


def test_put_without_digest(registry):
    location = start_upload(registry.url, unique_repo())
    r = requests.put(location, data=b"data", headers=OCTET)
    assert_error(r, 400, "DIGEST_INVALID")


@pytest.mark.parametrize("bad", BAD_DIGESTS)
def test_malformed_digest_on_get_blob(registry, bad):
    repo = unique_repo()
    push_blob(registry.url, repo, random_blob())
    assert_error(requests.get(f"{registry.url}/v2/{repo}/blobs/{bad}"), 400, "DIGEST_INVALID")


def test_unsupported_digest_algorithm_on_post(registry):
    r = requests.post(f"{registry.url}/v2/{unique_repo()}/blobs/uploads/?digest-algorithm=md5")
    assert_error(r, 400)


def test_upload_not_usable_from_another_repository(registry):
    repo, other, data = unique_repo(), unique_repo(), random_blob(100)
    push_blob(registry.url, other, random_blob())
    r = patch_chunk(start_upload(registry.url, repo), data[:50], 0)
    location = absolute(registry.url, r.headers["Location"])
    foreign = location.replace(f"/v2/{repo}/", f"/v2/{other}/")
    assert foreign != location
    assert_error(requests.get(foreign), 404, "BLOB_UPLOAD_UNKNOWN")
    assert_error(patch_chunk(foreign, data[50:], 50), 404, "BLOB_UPLOAD_UNKNOWN")
    assert_error(requests.put(with_query(foreign, digest=digest(data)), data=data[50:],
                              headers=OCTET), 404, "BLOB_UPLOAD_UNKNOWN")
    assert_error(requests.delete(foreign), 404, "BLOB_UPLOAD_UNKNOWN")
    assert requests.head(f"{registry.url}/v2/{other}/blobs/{digest(data)}").status_code == 404
    r = requests.put(with_query(location, digest=digest(data)), data=data[50:], headers=OCTET)
    assert r.status_code == 201
    assert_stored(registry, repo, data, digest(data))


def test_mount_from_repository_that_has_blob(registry):
    source, target, data = unique_repo(), unique_repo(), random_blob(500)
    d = push_blob(registry.url, source, data)
    r = requests.post(with_query(f"{registry.url}/v2/{target}/blobs/uploads/", mount=d,
                                 **{"from": source}))
    assert r.status_code == 201
    assert r.headers["Docker-Content-Digest"] == d
    assert requests.get(absolute(registry.url, r.headers["Location"])).content == data
    assert_stored(registry, target, data, d)


def test_mount_unknown_blob_starts_upload(registry):
    source, target, data = unique_repo(), unique_repo(), random_blob(500)
    push_blob(registry.url, source, random_blob())
    d = digest(data)
    r = requests.post(with_query(f"{registry.url}/v2/{target}/blobs/uploads/", mount=d,
                                 **{"from": source}))
    assert r.status_code == 202
    location = absolute(registry.url, r.headers["Location"])
    r = requests.put(with_query(location, digest=d), data=data, headers=OCTET)
    assert r.status_code == 201
    assert_stored(registry, target, data, d)


def test_mount_from_repository_without_blob_starts_upload(registry):
    holder, source, target, data = unique_repo(), unique_repo(), unique_repo(), random_blob(500)
    d = push_blob(registry.url, holder, data)
    push_blob(registry.url, source, random_blob())
    r = requests.post(with_query(f"{registry.url}/v2/{target}/blobs/uploads/", mount=d,
                                 **{"from": source}))
    assert r.status_code == 202
    assert r.headers["Location"]
    assert requests.head(f"{registry.url}/v2/{target}/blobs/{d}").status_code == 404


def test_final_put_body_without_content_range(registry):
    repo, data = unique_repo(), random_blob(250)
    d = digest(data)
    r = patch_chunk(start_upload(registry.url, repo), data[:100], 0)
    r = requests.put(with_query(absolute(registry.url, r.headers["Location"]), digest=d),
                     data=data[100:], headers=OCTET)
    assert r.status_code == 201
    assert_stored(registry, repo, data, d)


def test_existing_blob_pushed_again(registry):
    repo, other, data = unique_repo(), unique_repo(), random_blob(400)
    d = push_blob(registry.url, repo, data)
    assert push_blob(registry.url, repo, data) == d
    assert push_blob(registry.url, other, data) == d
    assert_stored(registry, repo, data, d)
    assert_stored(registry, other, data, d)


def test_failed_commit_stores_nothing(registry):
    repo, data = unique_repo(), random_blob(200)
    wrong = digest(b"other content")
    r = requests.post(with_query(f"{registry.url}/v2/{repo}/blobs/uploads/", digest=wrong),
                      data=data, headers=OCTET)
    assert_error(r, 400, "DIGEST_INVALID")
    for d in (wrong, digest(data)):
        assert not list((registry.data / "blobs").rglob(d.split(":")[1]))


def test_upload_closed_after_commit(registry):
    repo, data = unique_repo(), random_blob(100)
    location = start_upload(registry.url, repo)
    r = requests.put(with_query(location, digest=digest(data)), data=data, headers=OCTET)
    assert r.status_code == 201
    assert_error(requests.get(location), 404, "BLOB_UPLOAD_UNKNOWN")
    assert_error(patch_chunk(location, data, 0), 404, "BLOB_UPLOAD_UNKNOWN")


def test_empty_blob(registry):
    repo = unique_repo()
    d = digest(b"")
    r = requests.post(with_query(f"{registry.url}/v2/{repo}/blobs/uploads/", digest=d),
                      data=b"", headers=OCTET)
    assert r.status_code == 201
    r = requests.head(f"{registry.url}/v2/{repo}/blobs/{d}")
    assert r.status_code == 200
    assert r.headers["Content-Length"] == "0"


def test_chunk_shorter_than_content_range(registry):
    repo = unique_repo()
    location = start_upload(registry.url, repo)
    r = requests.patch(location, data=b"x" * 50, headers={**OCTET, "Content-Range": "0-99"})
    assert r.status_code in (400, 416)
    assert_error(r, r.status_code)
    r = requests.get(location)
    assert r.status_code == 404 or r.headers["Range"] == "0-0"
