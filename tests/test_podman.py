"""podman (root, vfs storage) pushing to and pulling from DistroFace."""
import requests

from clients import Podman, podman  # noqa: F401  (fixture)
from ocilayout import write_image


def test_push_and_pull(podman: Podman, registry, tmp_path):
    image = write_image(tmp_path / "layout", "v1", layer_sizes=(1000, 200_000), seed="podman")
    podman("pull", f"oci:{tmp_path / 'layout'}:v1")
    ref = f"{registry.host}/podman/app:v1"
    podman("tag", image.config_digest.split(":")[1], ref)
    podman("push", "--tls-verify=false", "--digestfile", tmp_path / "digest", ref)
    digest = (tmp_path / "digest").read_text().strip()

    r = requests.get(f"{registry.url}/v2/podman/app/manifests/v1",
                     headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})
    assert r.status_code == 200
    assert r.headers["Docker-Content-Digest"] == digest
    assert r.json()["config"]["digest"] == image.config_digest

    podman("rmi", "--all", "--force")
    podman("pull", "--tls-verify=false", ref)
    out = podman("image", "inspect", "--format", "{{.Id}} {{.Digest}}", ref).stdout.split()
    assert out == [image.config_digest.split(":")[1], digest]
