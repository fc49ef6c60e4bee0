import json

import pytest
import requests

from apihelpers import (OCI_MANIFEST, SPEC_ERROR_CODES, absolute, assert_error, digest, push_blob,
                        push_image, put_manifest, random_blob, raw_request, start_upload,
                        unchanged_data, unique_repo)

BAD_NAMES = ["UPPER", "Upper/case", "a//b", "..", "%2e%2e/x", "a/../b", "../../escape",
             "%2e%2e%2f%2e%2e%2fescape", "-a", "a-", "a.", ".a", "a___b", "a/.b",
             "a/b/", "_a", "a%00b", "x" * 256]


@pytest.fixture
def guarded(registry):
    with unchanged_data(registry):
        yield registry


def assert_raw_error(status, headers, body, allowed):
    assert status in allowed, (status, body)
    assert headers.get("Docker-Distribution-API-Version") == "registry/2.0"
    errors = json.loads(body)["errors"]
    assert errors and all(e["code"] in SPEC_ERROR_CODES for e in errors), body
    if status == 400:
        assert "NAME_INVALID" in {e["code"] for e in errors}, body


def test_multi_component_names(registry):
    for repo in ("a/b/c", "a.b/c-d/e__f/g_h/i--j", "0/1/2/3/4/5/6/7/8/9"):
        d, body = push_image(registry.url, repo, "v1")
        r = requests.get(f"{registry.url}/v2/{repo}/manifests/v1", headers={"Accept": OCI_MANIFEST})
        assert r.status_code == 200 and r.content == body


def test_name_of_255_characters(registry):
    repo = "/".join(["n" * 50] * 4) + "/" + "m" * 51
    assert len(repo) == 255
    push_image(registry.url, repo, "v1")
    assert requests.get(f"{registry.url}/v2/{repo}/tags/list").json()["tags"] == ["v1"]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_bad_name_on_monolithic_upload(guarded, name):
    data = random_blob(64)
    status, headers, body = raw_request(guarded.url, "POST",
                                        f"/v2/{name}/blobs/uploads/?digest={digest(data)}",
                                        data, {"Content-Type": "application/octet-stream"})
    assert_raw_error(status, headers, body, (400, 404))


@pytest.mark.parametrize("name", BAD_NAMES)
def test_bad_name_on_upload_session(guarded, name):
    status, headers, body = raw_request(guarded.url, "POST", f"/v2/{name}/blobs/uploads/")
    assert_raw_error(status, headers, body, (400, 404))


@pytest.mark.parametrize("name", BAD_NAMES)
def test_bad_name_on_manifest_put(guarded, name):
    body = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                       "config": {"mediaType": "application/vnd.oci.empty.v1+json",
                                  "digest": digest(b"{}"), "size": 2}, "layers": []}).encode()
    status, headers, resp = raw_request(guarded.url, "PUT", f"/v2/{name}/manifests/latest", body,
                                        {"Content-Type": OCI_MANIFEST})
    assert_raw_error(status, headers, resp, (400, 404))


@pytest.mark.parametrize("name", BAD_NAMES)
def test_bad_name_on_reads(guarded, name):
    for path in (f"/v2/{name}/tags/list", f"/v2/{name}/manifests/latest",
                 f"/v2/{name}/blobs/{digest(b'x')}", f"/v2/{name}/referrers/{digest(b'x')}"):
        status, headers, body = raw_request(guarded.url, "GET", path)
        assert_raw_error(status, headers, body, (400, 404))


BAD_TAGS = ["x" * 129, "-lead", ".lead", "a+b", "a%20b", "..", "%2e%2e", "a%00b", "%C3%A4"]


@pytest.mark.parametrize("tag", BAD_TAGS)
def test_bad_tag_on_put(registry, tag):
    repo = unique_repo()
    _, body = push_image(registry.url, repo, "good")
    with unchanged_data(registry):
        status, headers, resp = raw_request(registry.url, "PUT", f"/v2/{repo}/manifests/{tag}",
                                            body, {"Content-Type": OCI_MANIFEST})
    assert status == 400, (status, resp)
    assert json.loads(resp)["errors"][0]["code"] in SPEC_ERROR_CODES
    assert requests.get(f"{registry.url}/v2/{repo}/tags/list").json()["tags"] == ["good"]


@pytest.mark.parametrize("tag", BAD_TAGS)
def test_bad_tag_on_get(registry, tag):
    push_image(registry.url, "input/tags-get", "good")
    status, headers, body = raw_request(registry.url, "GET", f"/v2/input/tags-get/manifests/{tag}")
    assert status in (400, 404), (status, body)
    assert json.loads(body)["errors"][0]["code"] in SPEC_ERROR_CODES


def test_tag_of_128_characters(registry):
    repo, tag = unique_repo(), "T" * 128
    d, _ = push_image(registry.url, repo, tag)
    r = requests.head(f"{registry.url}/v2/{repo}/manifests/{tag}", headers={"Accept": OCI_MANIFEST})
    assert r.headers["Docker-Content-Digest"] == d


@pytest.mark.parametrize("body", [b"\xff\xfe\x00garbage", b"[" * 100_000, b'{"a": ' * 50_000,
                                  b'{"schemaVersion": 2}' + b" " * 10 + b"}",
                                  b'{"schemaVersion": 1e999999}'])
def test_bad_json_manifest(registry, body):
    repo = unique_repo()
    push_blob(registry.url, repo, random_blob())
    with unchanged_data(registry):
        r = put_manifest(registry.url, repo, "bad", body, OCI_MANIFEST)
    assert_error(r, 400, "MANIFEST_INVALID")


def test_bad_digest_leaves_data_unchanged(registry):
    repo = unique_repo()
    push_blob(registry.url, repo, random_blob())
    with unchanged_data(registry):
        r = requests.post(f"{registry.url}/v2/{repo}/blobs/uploads/?digest=sha256:../../../etc",
                          data=b"data")
        status, _, _ = raw_request(registry.url, "GET", f"/v2/{repo}/blobs/sha256:..%2f..%2fetc")
    assert_error(r, 400, "DIGEST_INVALID")
    assert status in (400, 404)


@pytest.mark.parametrize("spec", ["bytes=abc", "bytes=5-2", "bytes=0-1,3-4", "items=0-3",
                                  "bytes=-0", "bytes=--5", "bytes= 1-2",
                                  "bytes=99999999999999999999-"])
def test_odd_range_headers(registry, spec):
    repo, data = unique_repo(), random_blob(100)
    d = push_blob(registry.url, repo, data)
    r = requests.get(f"{registry.url}/v2/{repo}/blobs/{d}", headers={"Range": spec})
    assert r.status_code in (200, 206, 416), (r.status_code, r.text)
    if r.status_code == 200:
        assert r.content == data


@pytest.mark.parametrize("value", ["abc", "5", "0-", "-5", "0-99-3", "a-b", "99-0"])
def test_bad_content_range_on_patch(registry, value):
    repo = unique_repo()
    r = requests.post(f"{registry.url}/v2/{repo}/blobs/uploads/")
    location = absolute(registry.url, r.headers["Location"])
    r = requests.patch(location, data=b"x" * 100, headers={"Content-Range": value})
    assert r.status_code in (400, 416), (r.status_code, r.text)
    assert r.json()["errors"][0]["code"] in SPEC_ERROR_CODES


@pytest.mark.parametrize("bad", ["sha256:xyz", "sha256:../../../../escape", "md5:00",
                                 "sha256:" + "A" * 64, 7])
def test_bad_descriptor_digest_in_manifest(registry, bad):
    repo = unique_repo()
    push_blob(registry.url, repo, b"{}")
    manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                "config": {"mediaType": "application/vnd.oci.empty.v1+json",
                           "digest": digest(b"{}"), "size": 2},
                "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                            "digest": bad, "size": 10}]}
    with unchanged_data(registry):
        r = put_manifest(registry.url, repo, "v1", json.dumps(manifest).encode(), OCI_MANIFEST)
    assert r.status_code == 400
    assert_error(r, 400, "MANIFEST_INVALID", "DIGEST_INVALID", "MANIFEST_BLOB_UNKNOWN")


@pytest.mark.parametrize("field,value", [("size", -1), ("size", "10"), ("mediaType", 5),
                                         ("layers", {"not": "a list"})])
def test_bad_manifest_field_types(registry, field, value):
    repo = unique_repo()
    push_blob(registry.url, repo, b"{}")
    config = {"mediaType": "application/vnd.oci.empty.v1+json", "digest": digest(b"{}"),
              "size": 2}
    manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config, "layers": []}
    if field == "layers":
        manifest["layers"] = value
    else:
        manifest["config"] = {**config, field: value}
    with unchanged_data(registry):
        r = put_manifest(registry.url, repo, "v1", json.dumps(manifest).encode(), OCI_MANIFEST)
    assert_error(r, 400, "MANIFEST_INVALID")


BAD_UPLOAD_IDS = ["..", "%2e%2e", "..%2f..%2f..", "%2e%2e%2f%2e%2e%2fsecret", "not-a-uuid",
                  ".", "%00", "x" * 300]


@pytest.mark.parametrize("upload_id", BAD_UPLOAD_IDS)
def test_bad_upload_id(registry, upload_id):
    repo = unique_repo()
    start_upload(registry.url, repo)
    path = f"/v2/{repo}/blobs/uploads/{upload_id}"
    with unchanged_data(registry):
        for method, suffix in (("GET", ""), ("PATCH", ""), ("PUT", f"?digest={digest(b'x')}"),
                               ("DELETE", "")):
            status, headers, body = raw_request(registry.url, method, path + suffix, b"x")
            assert status in (400, 404), (method, status, body)
            assert json.loads(body)["errors"][0]["code"] in SPEC_ERROR_CODES


@pytest.mark.parametrize("ref", ["..", "%2e%2e", ".", "..%2f_tags", "sha256:..%2f..%2f..",
                                 "sha256:" + "." * 64])
def test_delete_with_traversal_reference(registry, ref):
    repo = unique_repo()
    push_image(registry.url, repo, "v1")
    with unchanged_data(registry):
        for path in (f"/v2/{repo}/manifests/{ref}", f"/v2/{repo}/blobs/{ref}"):
            status, headers, body = raw_request(registry.url, "DELETE", path)
            assert status in (400, 404), (path, status, body)
            assert json.loads(body)["errors"][0]["code"] in SPEC_ERROR_CODES
    assert requests.get(f"{registry.url}/v2/{repo}/tags/list").json()["tags"] == ["v1"]
