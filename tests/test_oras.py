"""ORAS (the Python client) pushing artifacts that refer to an image, and the referrers API."""
import json

import pytest
import requests

import oras.client
import oras.oci

from ocilayout import OCI_INDEX, OCI_MANIFEST, push_image_http, sha256, write_image

EMPTY = "application/vnd.oci.empty.v1+json"
SBOM = "application/vnd.example.sbom.v1"
SIGNATURE_CONFIG = "application/vnd.example.signature.config.v1+json"


@pytest.fixture(scope="module")
def subject(registry, tmp_path_factory):
    image = write_image(tmp_path_factory.mktemp("subject"), "v1", seed="oras-subject")
    push_image_http(registry.url, "oras/app", "v1", image)
    return image


@pytest.fixture(scope="module")
def client(registry):
    return oras.client.OrasClient(hostname=registry.host, insecure=True)


@pytest.fixture(scope="module")
def sbom(registry, client, subject, tmp_path_factory):
    """An artifact with artifactType and the empty config, pushed blob by blob."""
    tmp = tmp_path_factory.mktemp("sbom")
    container = client.get_container(f"{registry.host}/oras/app:sbom")
    (tmp / "empty.json").write_bytes(b"{}")
    config = {"mediaType": EMPTY, "digest": sha256(b"{}"), "size": 2}
    assert client.upload_blob(str(tmp / "empty.json"), container, config).status_code in (200, 201)
    (tmp / "sbom.json").write_text(json.dumps({"packages": ["distroface"]}))
    layer = oras.oci.NewLayer(str(tmp / "sbom.json"), media_type="application/spdx+json")
    layer["annotations"] = {"org.opencontainers.image.title": "sbom.json"}
    assert client.upload_blob(str(tmp / "sbom.json"), container, layer).status_code in (200, 201)
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": SBOM,
        "config": config,
        "layers": [layer],
        "subject": subject.descriptor(),
        "annotations": {"org.example.sbom.format": "json"},
    }
    r = client.upload_manifest(manifest, container)
    assert r.status_code == 201, r.text
    assert r.headers["OCI-Subject"] == subject.manifest_digest
    return r.headers["Docker-Content-Digest"]


@pytest.fixture(scope="module")
def signature(registry, client, subject, tmp_path_factory):
    """An artifact without artifactType, pushed by ORAS's own push()."""
    tmp = tmp_path_factory.mktemp("signature")
    (tmp / "config.json").write_bytes(b"{}")
    (tmp / "sig.txt").write_text("signed")
    r = client.push(target=f"{registry.host}/oras/app:sig",
                    files=[f"{tmp / 'sig.txt'}:application/vnd.example.signature"],
                    manifest_config=f"{tmp / 'config.json'}:{SIGNATURE_CONFIG}",
                    manifest_annotations={"org.example.signature.fingerprint": "abcd"},
                    subject=oras.oci.Subject(**subject.descriptor()),
                    disable_path_validation=True, quiet=True)
    assert r.headers["OCI-Subject"] == subject.manifest_digest
    return r.headers["Docker-Content-Digest"]


def referrers(registry, digest, **params):
    r = requests.get(f"{registry.url}/v2/oras/app/referrers/{digest}", params=params)
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"] == OCI_INDEX
    index = r.json()
    assert index["schemaVersion"] == 2 and index["mediaType"] == OCI_INDEX
    return r, {d["digest"]: d for d in index["manifests"]}


def test_referrers_lists_both_artifacts(registry, subject, sbom, signature):
    _, found = referrers(registry, subject.manifest_digest)
    assert set(found) == {sbom, signature}
    for digest in (sbom, signature):
        body = requests.get(f"{registry.url}/v2/oras/app/manifests/{digest}",
                            headers={"Accept": OCI_MANIFEST}).content
        assert sha256(body) == digest
        assert found[digest]["size"] == len(body)
        assert found[digest]["mediaType"] == OCI_MANIFEST
    assert found[sbom]["artifactType"] == SBOM
    assert found[sbom]["annotations"] == {"org.example.sbom.format": "json"}
    assert found[signature]["artifactType"] == SIGNATURE_CONFIG
    assert found[signature]["annotations"] == {"org.example.signature.fingerprint": "abcd"}


def test_referrers_artifact_type_filter(registry, subject, sbom, signature):
    r, found = referrers(registry, subject.manifest_digest, artifactType=SBOM)
    assert list(found) == [sbom]
    assert r.headers["OCI-Filters-Applied"] == "artifactType"

    r, found = referrers(registry, subject.manifest_digest, artifactType="application/x-none")
    assert found == {}
    assert r.headers["OCI-Filters-Applied"] == "artifactType"


def test_referrers_of_unknown_digest_is_empty(registry, subject):
    _, found = referrers(registry, sha256(b"no such manifest"))
    assert found == {}


def test_pull_artifact(registry, client, sbom, tmp_path):
    files = client.pull(target=f"{registry.host}/oras/app@{sbom}", outdir=str(tmp_path))
    assert [f.rsplit("/", 1)[1] for f in files] == ["sbom.json"]
    assert json.loads((tmp_path / "sbom.json").read_text()) == {"packages": ["distroface"]}
