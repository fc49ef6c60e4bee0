"""Real clients with accounts: docker login/push/pull/logout, skopeo --creds, podman login."""
import base64
import json

import pytest
import requests

from authhelpers import ADMIN, PASSWORD, add_user, basic
from clients import Docker, Podman, docker, dockerd, podman, skopeo  # noqa: F401  (fixtures)
from ocilayout import OCI_MANIFEST, write_image
from test_docker import load_image

NO_TLS = ("--src-tls-verify=false", "--dest-tls-verify=false")


@pytest.fixture
def reg(make_registry):
    reg = make_registry()
    add_user(reg, "dev", ["developers"])
    add_user(reg, "rita", ["readers"])
    return reg


def manifest_digest(reg, repo: str, tag: str) -> str | None:
    r = basic(*ADMIN).head(f"{reg.url}/v2/{repo}/manifests/{tag}", headers={"Accept": OCI_MANIFEST})
    return r.headers.get("Docker-Content-Digest") if r.status_code == 200 else None


# -- docker ---------------------------------------------------------------------------

def test_docker_login_push_pull_logout(reg, docker: Docker, tmp_path):
    image_id = load_image(docker, tmp_path, "distroface-test/auth:v1", "docker-auth-dev")
    ref = f"{reg.host}/team/app:v1"
    docker("tag", "distroface-test/auth:v1", ref)

    denied = docker("push", ref, check=False)
    assert denied.returncode != 0
    assert manifest_digest(reg, "team/app", "v1") is None

    assert "Login Succeeded" in docker.login(reg.host, "dev", PASSWORD).stdout
    stored = json.loads((tmp_path / "docker-config" / "config.json").read_text())["auths"][reg.host]
    assert stored["identitytoken"]      # docker keeps the refresh token, not the password
    assert PASSWORD not in base64.b64decode(stored.get("auth", "")).decode()
    docker("push", ref)
    assert manifest_digest(reg, "team/app", "v1")

    docker("rmi", ref, "distroface-test/auth:v1")
    docker("pull", ref)
    assert docker.image_id(ref) == image_id

    docker("logout", reg.host)
    stored = json.loads((tmp_path / "docker-config" / "config.json").read_text()).get("auths", {})
    assert reg.host not in stored
    docker("rmi", ref)
    assert docker("pull", ref, check=False).returncode != 0


def test_docker_reader_pulls_but_cannot_push(reg, docker: Docker, tmp_path):
    load_image(docker, tmp_path, "distroface-test/auth:v2", "docker-auth-reader")
    docker.login(reg.host, "dev", PASSWORD)
    docker("tag", "distroface-test/auth:v2", f"{reg.host}/team/app:v2")
    docker("push", f"{reg.host}/team/app:v2")
    docker("logout", reg.host)
    docker("rmi", f"{reg.host}/team/app:v2")

    docker.login(reg.host, "rita", PASSWORD)
    docker("pull", f"{reg.host}/team/app:v2")
    docker("tag", "distroface-test/auth:v2", f"{reg.host}/team/other:v2")
    refused = docker("push", f"{reg.host}/team/other:v2", check=False)
    assert refused.returncode != 0
    assert "denied" in refused.stderr.lower() or "unauthorized" in refused.stderr.lower(), refused.stderr
    assert manifest_digest(reg, "team/other", "v2") is None
    docker("rmi", f"{reg.host}/team/app:v2", f"{reg.host}/team/other:v2", "distroface-test/auth:v2")


def test_docker_login_with_a_wrong_password(reg, docker: Docker):
    proc = docker("login", "--username", "dev", "--password-stdin", reg.host,
                  input="wrong-password", check=False)
    assert proc.returncode != 0
    assert "unauthorized" in proc.stderr.lower() or "401" in proc.stderr, proc.stderr


def test_docker_credentials_stop_working_after_a_password_change(reg, docker: Docker, tmp_path):
    load_image(docker, tmp_path, "distroface-test/auth:v3", "docker-auth-revoke")
    docker.login(reg.host, "dev", PASSWORD)
    docker("tag", "distroface-test/auth:v3", f"{reg.host}/team/app:v3")
    docker("push", f"{reg.host}/team/app:v3")
    docker("rmi", f"{reg.host}/team/app:v3")

    r = basic(*ADMIN).put(f"{reg.url}/api/v1/users/dev/password", json={"new_password": "changed-password"})
    assert r.status_code == 200
    assert docker("pull", f"{reg.host}/team/app:v3", check=False).returncode != 0
    docker("rmi", "distroface-test/auth:v3")


# -- skopeo --------------------------------------------------------------------------

def test_skopeo_with_creds(reg, tmp_path):
    image = write_image(tmp_path / "layout", "v1", layer_sizes=(2048,), seed="skopeo-auth")
    target = f"docker://{reg.host}/team/skopeo:v1"
    refused = skopeo("copy", *NO_TLS, f"oci:{tmp_path / 'layout'}:v1", target, check=False)
    assert refused.returncode != 0
    refused = skopeo("copy", *NO_TLS, "--dest-creds", f"rita:{PASSWORD}",
                     f"oci:{tmp_path / 'layout'}:v1", target, check=False)
    assert refused.returncode != 0
    assert manifest_digest(reg, "team/skopeo", "v1") is None

    skopeo("copy", "--preserve-digests", *NO_TLS, "--dest-creds", f"dev:{PASSWORD}",
           f"oci:{tmp_path / 'layout'}:v1", target)
    assert manifest_digest(reg, "team/skopeo", "v1") == image.manifest_digest

    info = json.loads(skopeo("inspect", "--tls-verify=false", "--creds", f"rita:{PASSWORD}", target).stdout)
    assert info["Digest"] == image.manifest_digest
    assert skopeo("inspect", "--tls-verify=false", target, check=False).returncode != 0
    assert skopeo("inspect", "--tls-verify=false", "--creds", "rita:wrong-password", target,
                  check=False).returncode != 0

    skopeo("copy", *NO_TLS, "--src-creds", f"rita:{PASSWORD}", target, f"oci:{tmp_path / 'out'}:v1")
    assert skopeo("delete", "--tls-verify=false", "--creds", f"rita:{PASSWORD}", target,
                  check=False).returncode != 0
    skopeo("delete", "--tls-verify=false", "--creds", f"dev:{PASSWORD}", target)
    assert manifest_digest(reg, "team/skopeo", "v1") is None


# -- podman ---------------------------------------------------------------------------

def test_podman_login_push_pull(reg, podman: Podman, tmp_path):
    image = write_image(tmp_path / "layout", "v1", layer_sizes=(1000,), seed="podman-auth")
    podman("pull", f"oci:{tmp_path / 'layout'}:v1")
    ref = f"{reg.host}/team/podman:v1"
    podman("tag", image.config_digest.split(":")[1], ref)
    assert podman("push", "--tls-verify=false", ref, check=False).returncode != 0

    podman.login(reg.host, "dev", PASSWORD)
    podman("push", "--tls-verify=false", ref)
    assert manifest_digest(reg, "team/podman", "v1")

    podman("rmi", "--all", "--force")
    podman("pull", "--tls-verify=false", ref)
    assert podman("image", "inspect", "--format", "{{.Id}}", ref).stdout.strip() == \
        image.config_digest.split(":")[1]

    podman("logout", reg.host)
    podman("rmi", "--all", "--force")
    assert podman("pull", "--tls-verify=false", ref, check=False).returncode != 0
    refused = podman("login", "--tls-verify=false", "--username", "dev", "--password-stdin", reg.host,
                     input="wrong-password", check=False)
    assert refused.returncode != 0
    assert requests.get(f"{reg.url}/v2/team/podman/tags/list").status_code == 401
