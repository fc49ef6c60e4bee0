"""skopeo against DistroFace: copy in and out of OCI layouts, inspect, tags, indexes, mount, delete."""
import json

import pytest
import requests

from clients import skopeo
from ocilayout import (OCI_INDEX, OCI_MANIFEST, REF_NAME, blob_path, write_image,
                       write_multiplatform)

NO_TLS = ("--src-tls-verify=false", "--dest-tls-verify=false")


def copy(*args):
    return skopeo("copy", "--preserve-digests", *NO_TLS, *args)


@pytest.fixture(scope="module")
def pushed(registry, tmp_path_factory):
    """One two-layer image, copied by skopeo from an OCI layout to skopeo/basic:v1."""
    layout = tmp_path_factory.mktemp("layout")
    image = write_image(layout, "v1", layer_sizes=(2048, 70_000), seed="skopeo-basic")
    copy(f"oci:{layout}:v1", f"docker://{registry.host}/skopeo/basic:v1")
    return image


def test_pushed_manifest_is_byte_identical(registry, pushed):
    r = requests.get(f"{registry.url}/v2/skopeo/basic/manifests/v1",
                     headers={"Accept": OCI_MANIFEST})
    assert r.status_code == 200
    assert r.content == pushed.manifest
    assert r.headers["Docker-Content-Digest"] == pushed.manifest_digest


def test_inspect(registry, pushed):
    info = json.loads(skopeo("inspect", "--tls-verify=false",
                             f"docker://{registry.host}/skopeo/basic:v1").stdout)
    assert info["Digest"] == pushed.manifest_digest
    assert info["Layers"] == pushed.layer_digests
    assert (info["Os"], info["Architecture"]) == ("linux", "amd64")
    config = json.loads(skopeo("inspect", "--config", "--tls-verify=false",
                               f"docker://{registry.host}/skopeo/basic:v1").stdout)
    assert config == json.loads(pushed.blob(pushed.config_digest))


def test_list_tags(registry, pushed, tmp_path):
    extra = write_image(tmp_path, "v2", seed="skopeo-tags")
    copy(f"oci:{tmp_path}:v2", f"docker://{registry.host}/skopeo/basic:v2")
    out = skopeo("list-tags", "--tls-verify=false", f"docker://{registry.host}/skopeo/basic")
    assert sorted(json.loads(out.stdout)["Tags"]) == ["v1", "v2"]
    assert extra.manifest_digest != pushed.manifest_digest


def test_copy_out_to_oci_layout(registry, pushed, tmp_path):
    copy(f"docker://{registry.host}/skopeo/basic:v1", f"oci:{tmp_path}:out")
    index = json.loads((tmp_path / "index.json").read_text())
    (entry,) = index["manifests"]
    assert entry["annotations"][REF_NAME] == "out"
    assert entry["digest"] == pushed.manifest_digest
    for digest in pushed.blob_digests:
        assert blob_path(tmp_path, digest).read_bytes() == pushed.blob(digest)


def test_large_layer_round_trip(registry, tmp_path):
    image = write_image(tmp_path / "in", "big", layer_sizes=(20 * 1024 * 1024,), seed="skopeo-big")
    copy(f"oci:{tmp_path / 'in'}:big", f"docker://{registry.host}/skopeo/big:v1")
    copy(f"docker://{registry.host}/skopeo/big:v1", f"oci:{tmp_path / 'out'}:big")
    (layer,) = image.layer_digests
    assert blob_path(tmp_path / "out", layer).read_bytes() == image.blob(layer)


def test_copy_all_multiplatform_index(registry, tmp_path):
    index = write_multiplatform(tmp_path, "multi", seed="skopeo-multi",
                                platforms=[("linux", "amd64"), ("linux", "arm64", "v8")])
    copy("--all", f"oci:{tmp_path}:multi", f"docker://{registry.host}/skopeo/multi:v1")

    r = requests.get(f"{registry.url}/v2/skopeo/multi/manifests/v1", headers={"Accept": OCI_INDEX})
    assert r.status_code == 200
    assert r.headers["Content-Type"] == OCI_INDEX
    assert r.headers["Docker-Content-Digest"] == index.manifest_digest
    assert r.content == index.manifest
    for child in index.children:
        r = requests.get(f"{registry.url}/v2/skopeo/multi/manifests/{child.manifest_digest}",
                         headers={"Accept": OCI_MANIFEST})
        assert r.status_code == 200 and r.content == child.manifest
        for digest in child.blob_digests:
            r = requests.head(f"{registry.url}/v2/skopeo/multi/blobs/{digest}")
            assert r.status_code == 200
            assert int(r.headers["Content-Length"]) == child.sizes[digest]

    arm = json.loads(skopeo("inspect", "--tls-verify=false", "--override-arch", "arm64",
                            f"docker://{registry.host}/skopeo/multi:v1").stdout)
    assert arm["Digest"] == index.manifest_digest
    assert arm["Architecture"] == "arm64"
    assert arm["Layers"] == index.children[1].layer_digests


def test_copy_between_repositories_mounts_blobs(registry, pushed):
    out = skopeo("--debug", "copy", "--preserve-digests", *NO_TLS,
                 f"docker://{registry.host}/skopeo/basic:v1",
                 f"docker://{registry.host}/skopeo/mounted:v1")
    for digest in pushed.layer_digests:
        assert any("Trying to mount" in line and digest.split(":")[1] in line
                   for line in out.stderr.splitlines()), out.stderr
    assert out.stderr.count("mount OK") == len(pushed.layer_digests), out.stderr

    for repo in ("basic", "mounted"):
        r = requests.get(f"{registry.url}/v2/skopeo/{repo}/manifests/v1",
                         headers={"Accept": OCI_MANIFEST})
        assert r.headers["Docker-Content-Digest"] == pushed.manifest_digest
        for digest in pushed.blob_digests:
            r = requests.get(f"{registry.url}/v2/skopeo/{repo}/blobs/{digest}")
            assert r.status_code == 200 and r.content == pushed.blob(digest)


def test_delete(registry, tmp_path):
    image = write_image(tmp_path, "gone", seed="skopeo-delete")
    copy(f"oci:{tmp_path}:gone", f"docker://{registry.host}/skopeo/deleteme:gone")
    manifests = f"{registry.url}/v2/skopeo/deleteme/manifests"
    assert requests.head(f"{manifests}/gone", headers={"Accept": OCI_MANIFEST}).status_code == 200

    skopeo("delete", "--tls-verify=false", f"docker://{registry.host}/skopeo/deleteme:gone")
    for ref in (image.manifest_digest, "gone"):
        r = requests.get(f"{manifests}/{ref}", headers={"Accept": OCI_MANIFEST})
        assert r.status_code == 404, (ref, r.text)
