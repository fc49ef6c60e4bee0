import requests

from apihelpers import (OCI_MANIFEST, assert_error, digest, push_blob, push_image,
                        push_manifest, random_blob, unique_repo)


def get_manifest(registry, repo, ref):
    return requests.get(f"{registry.url}/v2/{repo}/manifests/{ref}",
                        headers={"Accept": OCI_MANIFEST})


def test_delete_tag_keeps_manifest_and_other_tags(registry):
    repo = unique_repo()
    d, body = push_image(registry.url, repo, "v1")
    push_manifest(registry.url, repo, "v2", body)
    r = requests.delete(f"{registry.url}/v2/{repo}/manifests/v1")
    assert r.status_code == 202
    assert_error(get_manifest(registry, repo, "v1"), 404, "MANIFEST_UNKNOWN")
    assert get_manifest(registry, repo, d).content == body
    assert get_manifest(registry, repo, "v2").content == body
    assert requests.get(f"{registry.url}/v2/{repo}/tags/list").json()["tags"] == ["v2"]


def test_delete_manifest_by_digest_removes_tags(registry):
    repo = unique_repo()
    d, body = push_image(registry.url, repo, "v1")
    push_manifest(registry.url, repo, "v2", body)
    other, _ = push_image(registry.url, repo, "other")
    r = requests.delete(f"{registry.url}/v2/{repo}/manifests/{d}")
    assert r.status_code == 202
    for ref in (d, "v1", "v2"):
        assert_error(get_manifest(registry, repo, ref), 404, "MANIFEST_UNKNOWN")
        assert requests.head(f"{registry.url}/v2/{repo}/manifests/{ref}").status_code == 404
    assert requests.get(f"{registry.url}/v2/{repo}/tags/list").json()["tags"] == ["other"]
    assert get_manifest(registry, repo, "other").headers["Docker-Content-Digest"] == other


def test_delete_manifest_twice(registry):
    repo = unique_repo()
    d, _ = push_image(registry.url, repo, "v1")
    assert requests.delete(f"{registry.url}/v2/{repo}/manifests/{d}").status_code == 202
    r = requests.delete(f"{registry.url}/v2/{repo}/manifests/{d}")
    assert_error(r, 404, "MANIFEST_UNKNOWN")


def test_delete_unknown_tag(registry):
    repo = unique_repo()
    push_image(registry.url, repo, "v1")
    assert_error(requests.delete(f"{registry.url}/v2/{repo}/manifests/nope"), 404,
                 "MANIFEST_UNKNOWN")


def test_delete_in_unknown_repository(registry):
    r = requests.delete(f"{registry.url}/v2/{unique_repo()}/manifests/{digest(b'x')}")
    assert_error(r, 404, "MANIFEST_UNKNOWN", "NAME_UNKNOWN")


def test_delete_manifest_keeps_it_in_other_repository(registry):
    repo, other = unique_repo(), unique_repo()
    d, body = push_image(registry.url, repo, "v1")
    manifest = requests.get(f"{registry.url}/v2/{repo}/manifests/{d}",
                            headers={"Accept": OCI_MANIFEST}).json()
    for desc in [manifest["config"], *manifest["layers"]]:
        r = requests.post(f"{registry.url}/v2/{other}/blobs/uploads/",
                          params={"mount": desc["digest"], "from": repo})
        assert r.status_code == 201
    push_manifest(registry.url, other, "v1", body)
    assert requests.delete(f"{registry.url}/v2/{repo}/manifests/{d}").status_code == 202
    assert get_manifest(registry, other, "v1").content == body


def test_delete_disabled(make_registry):
    from conftest import OPEN_CONFIG
    reg = make_registry(OPEN_CONFIG + "\n[registry]\ndelete_enabled = false\n")
    repo = unique_repo()
    d, body = push_image(reg.url, repo, "v1")
    blob = push_blob(reg.url, repo, random_blob())
    for url in (f"/v2/{repo}/manifests/v1", f"/v2/{repo}/manifests/{d}",
                f"/v2/{repo}/blobs/{blob}"):
        assert_error(requests.delete(reg.url + url), 405, "UNSUPPORTED")
    assert get_manifest(reg, repo, "v1").content == body
    assert get_manifest(reg, repo, d).content == body
    assert requests.head(f"{reg.url}/v2/{repo}/blobs/{blob}").status_code == 200


def test_deleted_blob_cannot_be_referenced(registry):
    repo = unique_repo()
    d, _ = push_image(registry.url, repo, "v1")
    manifest = get_manifest(registry, repo, d).json()
    layer = manifest["layers"][0]["digest"]
    assert requests.delete(f"{registry.url}/v2/{repo}/blobs/{layer}").status_code == 202
    manifest["annotations"] = {"again": "yes"}
    r = requests.put(f"{registry.url}/v2/{repo}/manifests/v2", json=manifest,
                     headers={"Content-Type": OCI_MANIFEST})
    assert_error(r, 400, "MANIFEST_BLOB_UNKNOWN")
