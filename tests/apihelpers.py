"""Small helpers for the HTTP-level /v2 API tests."""
from __future__ import annotations

import hashlib
import http.client
import json
import os
import uuid
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlencode, urljoin, urlsplit

import requests
from requests.structures import CaseInsensitiveDict

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_NONDIST_LAYER = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_FOREIGN_LAYER = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
DOCKER_SCHEMA1 = "application/vnd.docker.distribution.manifest.v1+prettyjws"

EMPTY_JSON = b"{}"
SPEC_ERROR_CODES = {
    "BLOB_UNKNOWN", "BLOB_UPLOAD_INVALID", "BLOB_UPLOAD_UNKNOWN", "DIGEST_INVALID",
    "MANIFEST_BLOB_UNKNOWN", "MANIFEST_INVALID", "MANIFEST_UNKNOWN", "NAME_INVALID",
    "NAME_UNKNOWN", "SIZE_INVALID", "UNAUTHORIZED", "DENIED", "UNSUPPORTED",
    "TOOMANYREQUESTS", "TAG_INVALID", "MANIFEST_UNVERIFIED",
}


def digest(data: bytes, alg: str = "sha256") -> str:
    return f"{alg}:{hashlib.new(alg, data).hexdigest()}"


EMPTY_DIGEST = digest(EMPTY_JSON)


def random_blob(size: int = 1024) -> bytes:
    return os.urandom(size)


def unique_repo(prefix: str = "test") -> str:
    return f"{prefix}/{uuid.uuid4().hex[:12]}"


def absolute(base: str, location: str) -> str:
    return urljoin(base + "/", location)


def with_query(url: str, **params) -> str:
    return url + ("&" if "?" in url else "?") + urlencode(params, doseq=True)


def assert_error(resp: requests.Response, status: int, *codes: str) -> dict:
    """Assert an OCI error body with `status`; if codes are given, one must appear."""
    assert resp.status_code == status, (resp.status_code, resp.text)
    assert resp.headers.get("Docker-Distribution-API-Version") == "registry/2.0"
    body = resp.json()
    assert isinstance(body.get("errors"), list) and body["errors"], body
    for err in body["errors"]:
        assert {"code", "message", "detail"} <= set(err), err
        assert err["code"] in SPEC_ERROR_CODES, err
    if codes:
        assert {e["code"] for e in body["errors"]} & set(codes), (codes, body)
    return body


def start_upload(url: str, repo: str, **params) -> str:
    """POST an upload session and return its absolute Location."""
    r = requests.post(with_query(f"{url}/v2/{repo}/blobs/uploads/", **params) if params
                      else f"{url}/v2/{repo}/blobs/uploads/", headers={"Content-Length": "0"})
    assert r.status_code == 202, (r.status_code, r.text)
    return absolute(url, r.headers["Location"])


def patch_chunk(location: str, chunk: bytes, start: int) -> requests.Response:
    return requests.patch(location, data=chunk, headers={
        "Content-Type": "application/octet-stream",
        "Content-Range": f"{start}-{start + len(chunk) - 1}"})


def push_blob(url: str, repo: str, data: bytes, alg: str = "sha256") -> str:
    """Push a blob monolithically (single POST, else POST then PUT); return its digest."""
    d = digest(data, alg)
    r = requests.post(with_query(f"{url}/v2/{repo}/blobs/uploads/", digest=d), data=data,
                      headers={"Content-Type": "application/octet-stream"})
    if r.status_code == 202:
        r = requests.put(with_query(absolute(url, r.headers["Location"]), digest=d), data=data,
                         headers={"Content-Type": "application/octet-stream"})
    assert r.status_code == 201, (r.status_code, r.text)
    return d


def descriptor(media_type: str, data: bytes, alg: str = "sha256", **extra) -> dict:
    return {"mediaType": media_type, "digest": digest(data, alg), "size": len(data), **extra}


def image_manifest(config: dict, layers: list[dict], media_type: str = OCI_MANIFEST,
                   **extra) -> dict:
    return {"schemaVersion": 2, "mediaType": media_type, "config": config,
            "layers": layers, **extra}


def index_manifest(manifests: list[dict], media_type: str = OCI_INDEX, **extra) -> dict:
    return {"schemaVersion": 2, "mediaType": media_type, "manifests": manifests, **extra}


def encode(manifest: dict) -> bytes:
    return json.dumps(manifest, separators=(",", ":")).encode()


def put_manifest(url: str, repo: str, ref: str, body: bytes | dict,
                 media_type: str | None = None, **params) -> requests.Response:
    if isinstance(body, dict):
        body = encode(body)
    if media_type is None:
        try:
            media_type = json.loads(body).get("mediaType")
        except (ValueError, AttributeError):
            pass
    target = f"{url}/v2/{repo}/manifests/{ref}"
    return requests.put(with_query(target, **params) if params else target, data=body,
                        headers={"Content-Type": media_type or OCI_MANIFEST})


def push_manifest(url: str, repo: str, ref: str, body: bytes | dict,
                  media_type: str | None = None, **params) -> str:
    """PUT a manifest, assert 201, return its digest."""
    r = put_manifest(url, repo, ref, body, media_type, **params)
    assert r.status_code == 201, (r.status_code, r.text)
    return r.headers["Docker-Content-Digest"]


def push_image(url: str, repo: str, tag: str | None = None, layers: int = 1,
               media_type: str = OCI_MANIFEST, **extra) -> tuple[str, bytes]:
    """Push config + random layers + manifest; return (manifest digest, manifest bytes)."""
    docker = media_type == DOCKER_MANIFEST
    config = json.dumps({"architecture": "amd64", "os": "linux",
                         "rootfs": {"type": "layers", "diff_ids": []},
                         "nonce": uuid.uuid4().hex}).encode()
    push_blob(url, repo, config)
    descs = []
    for _ in range(layers):
        data = random_blob(512)
        push_blob(url, repo, data)
        descs.append(descriptor(DOCKER_LAYER if docker else OCI_LAYER, data))
    manifest = image_manifest(descriptor(DOCKER_CONFIG if docker else OCI_CONFIG, config),
                              descs, media_type, **extra)
    body = encode(manifest)
    d = push_manifest(url, repo, tag or digest(body), body, media_type)
    assert d == digest(body)
    return d, body


def push_artifact(url: str, repo: str, artifact_type: str, subject: dict | None = None,
                  annotations: dict | None = None, ref: str | None = None) -> tuple[str, bytes]:
    """Push an OCI artifact (empty config, one small layer); return (digest, bytes)."""
    push_blob(url, repo, EMPTY_JSON)
    layer = random_blob(64)
    push_blob(url, repo, layer)
    extra = {"artifactType": artifact_type}
    if subject:
        extra["subject"] = subject
    if annotations:
        extra["annotations"] = annotations
    body = encode(image_manifest(descriptor(OCI_EMPTY, EMPTY_JSON),
                                 [descriptor("application/octet-stream", layer)], **extra))
    return push_manifest(url, repo, ref or digest(body), body), body


def walk_pages(url: str, first: str) -> list[requests.Response]:
    """GET `first`, then follow Link rel=next headers; return every page's response."""
    pages = []
    target = url + first
    for _ in range(1000):
        r = requests.get(target)
        assert r.status_code == 200, (r.status_code, r.text)
        pages.append(r)
        if "next" not in r.links:
            return pages
        assert r.headers["Link"].startswith("</v2/"), r.headers["Link"]
        target = absolute(url, r.links["next"]["url"])
    raise AssertionError("pagination never ended")


def raw_request(url: str, method: str, path: str, body: bytes = b"",
                headers: dict | None = None) -> tuple[int, CaseInsensitiveDict, bytes]:
    """Send `path` exactly as given (no dot-segment normalisation)."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, CaseInsensitiveDict(resp.getheaders()), resp.read()
    finally:
        conn.close()


def tree(root: Path, skip: Path | None = None) -> set[str]:
    """Relative paths of every file and directory under root (skipping `skip`)."""
    out = set()
    for dirpath, dirnames, filenames in os.walk(root):
        if skip is not None and Path(dirpath) == skip:
            dirnames[:] = []
            continue
        for n in dirnames + filenames:
            out.add(os.path.relpath(os.path.join(dirpath, n), root))
    return out


VOLATILE = {"stats.json", "tasks", "secret", "users.json", "lock", ".lock", "distroface.lock"}


def data_snapshot(data: Path) -> dict[str, tuple[int, int]]:
    """(size, mtime) of every fact under the data directory, ignoring bookkeeping files."""
    snap = {}
    for rel in tree(data):
        if rel.split(os.sep)[0] in VOLATILE:
            continue
        path = data / rel
        if path.is_file():
            st = path.stat()
            snap[rel] = (st.st_size, st.st_mtime_ns)
        else:
            snap[rel] = (0, 0)
    return snap


@contextmanager
def unchanged_data(registry):
    """Assert the block changes nothing in the data dir nor anywhere beside it."""
    requests.get(registry.url + "/v2/")
    outside = registry.workdir.parent
    before_outside = tree(outside, skip=registry.data)
    before = data_snapshot(registry.data)
    yield
    assert tree(outside, skip=registry.data) == before_outside
    assert data_snapshot(registry.data) == before


def rss_kib(pid: int, field: str = "VmRSS") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)
