import requests

from apihelpers import assert_error, digest, push_blob, random_blob, unique_repo

API_VERSION = "registry/2.0"


def test_v2_root(registry):
    r = requests.get(registry.url + "/v2/")
    assert r.status_code == 200
    assert r.headers["Docker-Distribution-API-Version"] == API_VERSION


def test_healthz(registry):
    assert requests.get(registry.url + "/healthz").status_code == 200


def test_api_version_header_on_success_and_error(registry):
    repo = unique_repo()
    d = push_blob(registry.url, repo, random_blob())
    responses = [
        requests.get(f"{registry.url}/v2/{repo}/blobs/{d}"),
        requests.head(f"{registry.url}/v2/{repo}/blobs/{d}"),
        requests.get(f"{registry.url}/v2/{repo}/blobs/{digest(b'missing')}"),
        requests.get(f"{registry.url}/v2/{repo}/manifests/nope"),
        requests.get(f"{registry.url}/v2/{unique_repo()}/tags/list"),
        requests.post(f"{registry.url}/v2/{repo}/blobs/uploads/"),
        requests.get(f"{registry.url}/v2/_catalog"),
    ]
    for r in responses:
        assert r.headers.get("Docker-Distribution-API-Version") == API_VERSION, r.url


def test_unknown_v2_route_is_oci_error(registry):
    r = requests.get(registry.url + "/v2/some/repo/nonsense/thing")
    assert_error(r, 404)


def test_wrong_method_is_oci_error(registry):
    repo = unique_repo()
    push_blob(registry.url, repo, random_blob())
    r = requests.post(f"{registry.url}/v2/{repo}/tags/list")
    assert r.status_code in (404, 405)
    assert_error(r, r.status_code)


def test_error_body_shape(registry):
    r = requests.get(f"{registry.url}/v2/{unique_repo()}/manifests/latest")
    body = assert_error(r, 404, "MANIFEST_UNKNOWN", "NAME_UNKNOWN")
    assert r.headers["Content-Type"].startswith("application/json")
    assert all(isinstance(e["message"], str) for e in body["errors"])
