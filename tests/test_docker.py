"""Debian's docker (a private dockerd on vfs) pushing to and pulling from DistroFace."""
import requests

from clients import Docker, docker, dockerd, skopeo  # noqa: F401  (fixtures)
from ocilayout import write_image

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"


def load_image(docker: Docker, tmp_path, name: str, seed: str, layer_sizes=(4096, 300_000)) -> str:
    """Generate an OCI image, turn it into a docker-archive, `docker load` it; return its ID."""
    image = write_image(tmp_path / "layout", "v1", layer_sizes=layer_sizes, seed=seed)
    archive = tmp_path / "image.tar"
    skopeo("copy", f"oci:{tmp_path / 'layout'}:v1", f"docker-archive:{archive}:{name}")
    docker("load", "--input", archive)
    assert docker.image_id(name) == image.config_digest
    return image.config_digest


def test_push_rmi_pull(docker: Docker, registry, tmp_path):
    image_id = load_image(docker, tmp_path, "distroface-test/docker:v1", "docker-push-pull",
                          layer_sizes=(4096, 17 * 1024 * 1024))
    ref = f"{registry.host}/docker/app:v1"
    docker("tag", "distroface-test/docker:v1", ref)
    docker("push", ref)

    r = requests.get(f"{registry.url}/v2/docker/app/manifests/v1",
                     headers={"Accept": DOCKER_MANIFEST})
    assert r.status_code == 200
    assert r.headers["Content-Type"] == DOCKER_MANIFEST
    digest = r.headers["Docker-Content-Digest"]
    assert r.json()["config"]["digest"] == image_id

    docker("rmi", ref, "distroface-test/docker:v1")
    assert docker("image", "inspect", ref, check=False).returncode != 0

    docker("pull", ref)
    assert docker.image_id(ref) == image_id
    repo_digests = docker("image", "inspect", "--format", "{{json .RepoDigests}}", ref).stdout
    assert f"{registry.host}/docker/app@{digest}" in repo_digests
    docker("rmi", ref)


def test_pull_by_digest_and_push_second_tag(docker: Docker, registry, tmp_path):
    image_id = load_image(docker, tmp_path, "distroface-test/docker:v2", "docker-by-digest")
    for tag in ("a", "b"):
        docker("tag", "distroface-test/docker:v2", f"{registry.host}/docker/tags:{tag}")
        docker("push", f"{registry.host}/docker/tags:{tag}")
    tags = requests.get(f"{registry.url}/v2/docker/tags/tags/list").json()["tags"]
    assert sorted(tags) == ["a", "b"]

    digest = requests.head(f"{registry.url}/v2/docker/tags/manifests/a",
                           headers={"Accept": DOCKER_MANIFEST}).headers["Docker-Content-Digest"]
    docker("rmi", f"{registry.host}/docker/tags:a", f"{registry.host}/docker/tags:b",
           "distroface-test/docker:v2")
    docker("pull", f"{registry.host}/docker/tags@{digest}")
    assert docker.image_id(f"{registry.host}/docker/tags@{digest}") == image_id
    docker("rmi", f"{registry.host}/docker/tags@{digest}")
