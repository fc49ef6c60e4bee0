from concurrent.futures import ThreadPoolExecutor

import requests

from apihelpers import (OCI_MANIFEST, digest, push_blob, push_image, push_manifest, random_blob,
                        start_upload, unique_repo, with_query)


def test_concurrent_tag_pushes_lose_nothing(registry):
    repo = unique_repo()
    _, body = push_image(registry.url, repo)
    tags = [f"t{i:02d}" for i in range(24)]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda t: push_manifest(registry.url, repo, t, body), tags))
    assert requests.get(f"{registry.url}/v2/{repo}/tags/list").json()["tags"] == tags


def test_concurrent_pushes_to_one_tag(registry):
    repo = unique_repo()
    images = [push_image(registry.url, repo) for _ in range(6)]
    with ThreadPoolExecutor(6) as pool:
        list(pool.map(lambda img: push_manifest(registry.url, repo, "latest", img[1]), images))
    r = requests.get(f"{registry.url}/v2/{repo}/manifests/latest", headers={"Accept": OCI_MANIFEST})
    assert r.status_code == 200
    assert (r.headers["Docker-Content-Digest"], r.content) in images


def test_concurrent_uploads_of_same_blob(registry):
    data = random_blob(2_000_000)
    d = digest(data)
    repos = [unique_repo() for _ in range(6)]

    def upload(repo):
        r = requests.put(with_query(start_upload(registry.url, repo), digest=d), data=data,
                         headers={"Content-Type": "application/octet-stream"})
        return r.status_code

    with ThreadPoolExecutor(6) as pool:
        assert list(pool.map(upload, repos)) == [201] * 6
    for repo in repos:
        r = requests.get(f"{registry.url}/v2/{repo}/blobs/{d}")
        assert r.status_code == 200 and r.content == data


def test_concurrent_blob_pushes_to_one_repository(registry):
    repo = unique_repo()
    blobs = [random_blob(5000) for _ in range(16)]
    with ThreadPoolExecutor(8) as pool:
        digests = list(pool.map(lambda b: push_blob(registry.url, repo, b), blobs))
    for d, data in zip(digests, blobs):
        assert requests.get(f"{registry.url}/v2/{repo}/blobs/{d}").content == data
