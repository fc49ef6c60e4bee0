import json

import pytest
import requests

from apihelpers import (DOCKER_CONFIG, DOCKER_FOREIGN_LAYER, DOCKER_LAYER, DOCKER_LIST,
                        DOCKER_MANIFEST, DOCKER_SCHEMA1, EMPTY_DIGEST, EMPTY_JSON, OCI_CONFIG,
                        OCI_EMPTY, OCI_INDEX, OCI_LAYER, OCI_MANIFEST, OCI_NONDIST_LAYER,
                        absolute, assert_error, descriptor, digest, encode, image_manifest,
                        index_manifest, push_blob, push_image, push_manifest, put_manifest,
                        random_blob, unique_repo)

FOUR_MIB = 4 * 1024 * 1024


def config_and_layer(registry, repo, config_type=OCI_CONFIG, layer_type=OCI_LAYER):
    config, layer = b'{"architecture":"amd64","os":"linux"}', random_blob(300)
    push_blob(registry.url, repo, config)
    push_blob(registry.url, repo, layer)
    return descriptor(config_type, config), descriptor(layer_type, layer)


def assert_manifest(registry, repo, ref, body, media_type):
    r = requests.get(f"{registry.url}/v2/{repo}/manifests/{ref}",
                     headers={"Accept": media_type})
    assert r.status_code == 200
    assert r.content == body
    assert r.headers["Content-Type"] == media_type
    assert r.headers["Docker-Content-Digest"] == digest(body)


def test_oci_image_manifest(registry):
    repo = unique_repo()
    config, layer = config_and_layer(registry, repo)
    body = encode(image_manifest(config, [layer]))
    r = put_manifest(registry.url, repo, "v1", body)
    assert r.status_code == 201
    assert r.headers["Docker-Content-Digest"] == digest(body)
    assert requests.get(absolute(registry.url, r.headers["Location"]),
                        headers={"Accept": OCI_MANIFEST}).content == body
    assert_manifest(registry, repo, "v1", body, OCI_MANIFEST)
    assert_manifest(registry, repo, digest(body), body, OCI_MANIFEST)


def test_head_manifest(registry):
    repo = unique_repo()
    d, body = push_image(registry.url, repo, "v1")
    for ref in ("v1", d):
        r = requests.head(f"{registry.url}/v2/{repo}/manifests/{ref}",
                          headers={"Accept": OCI_MANIFEST})
        assert r.status_code == 200
        assert r.headers["Docker-Content-Digest"] == d
        assert int(r.headers["Content-Length"]) == len(body)
        assert r.headers["Content-Type"] == OCI_MANIFEST


def test_manifest_stored_byte_for_byte(registry):
    repo = unique_repo()
    config, layer = config_and_layer(registry, repo)
    manifest = {"layers": [layer], "config": config, "schemaVersion": 2,
                "mediaType": OCI_MANIFEST, "annotations": {"b": "\u00e9", "a": "1"}}
    body = ("\n  " + json.dumps(manifest, indent=7, ensure_ascii=False) + "  \n\t\n").encode()
    assert push_manifest(registry.url, repo, "odd", body, OCI_MANIFEST) == digest(body)
    assert_manifest(registry, repo, "odd", body, OCI_MANIFEST)
    assert_manifest(registry, repo, digest(body), body, OCI_MANIFEST)


def test_oci_index(registry):
    repo = unique_repo()
    d1, b1 = push_image(registry.url, repo)
    d2, b2 = push_image(registry.url, repo)
    body = encode(index_manifest([
        descriptor(OCI_MANIFEST, b1, platform={"architecture": "amd64", "os": "linux"}),
        descriptor(OCI_MANIFEST, b2, platform={"architecture": "arm64", "os": "linux"})]))
    assert push_manifest(registry.url, repo, "multi", body) == digest(body)
    assert_manifest(registry, repo, "multi", body, OCI_INDEX)


def test_docker_schema2(registry):
    repo = unique_repo()
    config, layer = config_and_layer(registry, repo, DOCKER_CONFIG, DOCKER_LAYER)
    body = encode(image_manifest(config, [layer], DOCKER_MANIFEST))
    assert push_manifest(registry.url, repo, "v1", body) == digest(body)
    assert_manifest(registry, repo, "v1", body, DOCKER_MANIFEST)


def test_docker_manifest_list(registry):
    repo = unique_repo()
    _, child = push_image(registry.url, repo, media_type=DOCKER_MANIFEST)
    body = encode(index_manifest([descriptor(DOCKER_MANIFEST, child,
                                             platform={"architecture": "amd64", "os": "linux"})],
                                 DOCKER_LIST))
    assert push_manifest(registry.url, repo, "list", body) == digest(body)
    assert_manifest(registry, repo, "list", body, DOCKER_LIST)


def test_oci_artifact_with_empty_config(registry):
    repo = unique_repo()
    assert push_blob(registry.url, repo, EMPTY_JSON) == EMPTY_DIGEST
    layer = random_blob(100)
    push_blob(registry.url, repo, layer)
    body = encode(image_manifest(descriptor(OCI_EMPTY, EMPTY_JSON),
                                 [descriptor("application/vnd.example.thing", layer)],
                                 artifactType="application/vnd.example.artifact"))
    assert push_manifest(registry.url, repo, "art", body) == digest(body)
    assert_manifest(registry, repo, "art", body, OCI_MANIFEST)


def test_artifact_with_only_empty_layer(registry):
    repo = unique_repo()
    push_blob(registry.url, repo, EMPTY_JSON)
    empty = descriptor(OCI_EMPTY, EMPTY_JSON)
    body = encode(image_manifest(empty, [empty], artifactType="application/vnd.example.flag"))
    assert push_manifest(registry.url, repo, "flag", body) == digest(body)


def test_invalid_json(registry):
    repo = unique_repo()
    push_image(registry.url, repo, "v1")
    r = put_manifest(registry.url, repo, "bad", b'{"schemaVersion": 2, "mediaType": ', OCI_MANIFEST)
    assert_error(r, 400, "MANIFEST_INVALID")
    assert requests.get(f"{registry.url}/v2/{repo}/manifests/bad").status_code == 404


@pytest.mark.parametrize("body", [b"[]", b'"text"', b"null", b"{}",
                                  b'{"schemaVersion": 2, "mediaType": "%s", "config": 5}'
                                  % OCI_MANIFEST.encode()])
def test_json_not_a_manifest(registry, body):
    r = put_manifest(registry.url, unique_repo(), "bad", body, OCI_MANIFEST)
    assert_error(r, 400, "MANIFEST_INVALID")


def test_content_type_contradicts_media_type(registry):
    repo = unique_repo()
    config, layer = config_and_layer(registry, repo)
    body = encode(image_manifest(config, [layer]))
    r = put_manifest(registry.url, repo, "v1", body, DOCKER_MANIFEST)
    assert_error(r, 400, "MANIFEST_INVALID")
    assert requests.get(f"{registry.url}/v2/{repo}/manifests/v1").status_code == 404


def test_missing_config_blob(registry):
    repo = unique_repo()
    _, layer = config_and_layer(registry, repo)
    body = encode(image_manifest(descriptor(OCI_CONFIG, b'{"missing":true}'), [layer]))
    assert_error(put_manifest(registry.url, repo, "v1", body), 400, "MANIFEST_BLOB_UNKNOWN")


def test_missing_layer_blob(registry):
    repo = unique_repo()
    config, layer = config_and_layer(registry, repo)
    missing = descriptor(OCI_LAYER, random_blob(10))
    body = encode(image_manifest(config, [layer, missing]))
    assert_error(put_manifest(registry.url, repo, "v1", body), 400, "MANIFEST_BLOB_UNKNOWN")
    assert requests.get(f"{registry.url}/v2/{repo}/manifests/v1").status_code == 404


def test_blob_of_other_repository_is_unknown(registry):
    repo, other = unique_repo(), unique_repo()
    config, layer = config_and_layer(registry, other)
    push_blob(registry.url, repo, random_blob())
    body = encode(image_manifest(config, [layer]))
    assert_error(put_manifest(registry.url, repo, "v1", body), 400, "MANIFEST_BLOB_UNKNOWN")


def test_index_with_missing_child(registry):
    repo = unique_repo()
    _, child = push_image(registry.url, repo)
    missing = encode(image_manifest(descriptor(OCI_CONFIG, b"{}"), []))
    body = encode(index_manifest([descriptor(OCI_MANIFEST, child),
                                  descriptor(OCI_MANIFEST, missing)]))
    assert_error(put_manifest(registry.url, repo, "idx", body), 400, "MANIFEST_BLOB_UNKNOWN")


def test_subject_may_be_missing(registry):
    repo = unique_repo()
    config, layer = config_and_layer(registry, repo)
    absent = encode(image_manifest(descriptor(OCI_CONFIG, b"{}"), []))
    subject = descriptor(OCI_MANIFEST, absent)
    body = encode(image_manifest(config, [layer], subject=subject))
    r = put_manifest(registry.url, repo, digest(body), body)
    assert r.status_code == 201
    assert r.headers["OCI-Subject"] == subject["digest"]
    assert_manifest(registry, repo, digest(body), body, OCI_MANIFEST)


def test_put_by_digest_with_tags(registry):
    repo = unique_repo()
    config, layer = config_and_layer(registry, repo)
    body = encode(image_manifest(config, [layer]))
    d = digest(body)
    r = put_manifest(registry.url, repo, d, body, tag=["a", "b", "1.0"])
    assert r.status_code == 201
    assert r.headers["Docker-Content-Digest"] == d
    tags = {t.strip() for t in r.headers["OCI-Tag"].split(",")}
    assert tags == {"a", "b", "1.0"}
    for tag in ("a", "b", "1.0"):
        assert_manifest(registry, repo, tag, body, OCI_MANIFEST)


def test_put_by_digest_mismatch(registry):
    repo = unique_repo()
    config, layer = config_and_layer(registry, repo)
    body = encode(image_manifest(config, [layer]))
    wrong = digest(body + b" ")
    assert_error(put_manifest(registry.url, repo, wrong, body), 400, "DIGEST_INVALID")
    assert requests.get(f"{registry.url}/v2/{repo}/manifests/{wrong}").status_code == 404
    assert requests.get(f"{registry.url}/v2/{repo}/manifests/{digest(body)}").status_code == 404


def test_put_by_sha512_digest(registry):
    repo = unique_repo()
    config, layer = config_and_layer(registry, repo)
    body = encode(image_manifest(config, [layer]))
    d = digest(body, "sha512")
    r = put_manifest(registry.url, repo, d, body)
    assert r.status_code == 201
    assert r.headers["Docker-Content-Digest"] == d
    r = requests.get(f"{registry.url}/v2/{repo}/manifests/{d}", headers={"Accept": OCI_MANIFEST})
    assert r.status_code == 200
    assert r.content == body
    assert r.headers["Docker-Content-Digest"] == d


def padded_manifest(config: dict, size: int) -> bytes:
    base = encode(image_manifest(config, [], annotations={"pad": ""}))
    body = encode(image_manifest(config, [], annotations={"pad": "x" * (size - len(base))}))
    assert len(body) == size
    return body


def test_manifest_of_four_mib_accepted(registry):
    repo = unique_repo()
    config, _ = config_and_layer(registry, repo)
    body = padded_manifest(config, FOUR_MIB)
    assert push_manifest(registry.url, repo, "big", body) == digest(body)
    assert_manifest(registry, repo, "big", body, OCI_MANIFEST)


def test_manifest_over_four_mib_refused(registry):
    repo = unique_repo()
    config, _ = config_and_layer(registry, repo)
    r = put_manifest(registry.url, repo, "huge", padded_manifest(config, FOUR_MIB + 1))
    assert r.status_code == 413
    assert_error(r, 413)
    assert requests.get(f"{registry.url}/v2/{repo}/manifests/huge").status_code == 404


def test_max_manifest_size_is_configurable(make_registry):
    from conftest import OPEN_CONFIG
    reg = make_registry(OPEN_CONFIG + "\n[registry]\nmax_manifest_size = 2000\n")
    repo = unique_repo()
    config, _ = config_and_layer(reg, repo)
    assert put_manifest(reg.url, repo, "small", padded_manifest(config, 2000)).status_code == 201
    assert_error(put_manifest(reg.url, repo, "big", padded_manifest(config, 2001)), 413)


SCHEMA1 = {"schemaVersion": 1, "name": "x/y", "tag": "latest", "architecture": "amd64",
           "fsLayers": [{"blobSum": EMPTY_DIGEST}], "history": [{"v1Compatibility": "{}"}],
           "signatures": []}


@pytest.mark.parametrize("media_type", [DOCKER_SCHEMA1,
                                        "application/vnd.docker.distribution.manifest.v1+json",
                                        OCI_MANIFEST])
def test_schema1_refused(registry, media_type):
    repo = unique_repo()
    push_blob(registry.url, repo, EMPTY_JSON)
    body = json.dumps(SCHEMA1, indent=3).encode()
    r = put_manifest(registry.url, repo, "old", body, media_type)
    err = assert_error(r, 400, "MANIFEST_INVALID")["errors"][0]
    assert "schema" in (err["message"] + json.dumps(err["detail"])).lower()
    assert requests.get(f"{registry.url}/v2/{repo}/manifests/old").status_code == 404


@pytest.mark.parametrize("manifest_type,config_type,layer_type", [
    (OCI_MANIFEST, OCI_CONFIG, OCI_NONDIST_LAYER),
    (DOCKER_MANIFEST, DOCKER_CONFIG, DOCKER_FOREIGN_LAYER)])
def test_non_distributable_layer_without_blob(registry, manifest_type, config_type, layer_type):
    repo = unique_repo()
    config, layer = config_and_layer(registry, repo, config_type,
                                     OCI_LAYER if manifest_type == OCI_MANIFEST else DOCKER_LAYER)
    foreign = descriptor(layer_type, random_blob(1000),
                         urls=["https://example.invalid/layer.tar.gz"])
    body = encode(image_manifest(config, [foreign, layer], manifest_type))
    assert push_manifest(registry.url, repo, "win", body) == digest(body)
    assert_manifest(registry, repo, "win", body, manifest_type)


def test_unknown_manifest(registry):
    repo = unique_repo()
    push_image(registry.url, repo, "v1")
    assert_error(requests.get(f"{registry.url}/v2/{repo}/manifests/nope"), 404, "MANIFEST_UNKNOWN")
    assert_error(requests.get(f"{registry.url}/v2/{repo}/manifests/{digest(b'x')}"), 404,
                 "MANIFEST_UNKNOWN")
    assert requests.head(f"{registry.url}/v2/{repo}/manifests/nope").status_code == 404


def test_manifest_not_visible_in_other_repository(registry):
    d, _ = push_image(registry.url, unique_repo(), "v1")
    other = unique_repo()
    push_image(registry.url, other, "v1")
    assert_error(requests.get(f"{registry.url}/v2/{other}/manifests/{d}"), 404, "MANIFEST_UNKNOWN")


def test_unknown_repository(registry):
    repo = unique_repo()
    r = requests.get(f"{registry.url}/v2/{repo}/manifests/latest")
    assert_error(r, 404, "MANIFEST_UNKNOWN", "NAME_UNKNOWN")
    assert_error(requests.get(f"{registry.url}/v2/{repo}/tags/list"), 404, "NAME_UNKNOWN")


def test_retag_moves_tag(registry):
    repo = unique_repo()
    push_image(registry.url, repo, "v1")
    d2, b2 = push_image(registry.url, repo, "v1")
    assert_manifest(registry, repo, "v1", b2, OCI_MANIFEST)


def test_repush_same_manifest_is_idempotent(registry):
    repo = unique_repo()
    d, body = push_image(registry.url, repo, "v1")
    assert push_manifest(registry.url, repo, "v1", body) == d
    assert push_manifest(registry.url, repo, d, body) == d
    assert_manifest(registry, repo, "v1", body, OCI_MANIFEST)


def test_content_type_parameters_ignored(registry):
    repo = unique_repo()
    config, layer = config_and_layer(registry, repo)
    body = encode(image_manifest(config, [layer]))
    r = put_manifest(registry.url, repo, "v1", body, OCI_MANIFEST + "; charset=utf-8")
    assert r.status_code == 201
    assert_manifest(registry, repo, "v1", body, OCI_MANIFEST)


def test_manifest_without_media_type_field(registry):
    repo = unique_repo()
    config, layer = config_and_layer(registry, repo)
    manifest = image_manifest(config, [layer])
    del manifest["mediaType"]
    body = encode(manifest)
    assert push_manifest(registry.url, repo, "v1", body, OCI_MANIFEST) == digest(body)
    assert_manifest(registry, repo, "v1", body, OCI_MANIFEST)


def test_index_with_subject_reports_oci_subject(registry):
    repo = unique_repo()
    _, child = push_image(registry.url, repo)
    subject = descriptor(OCI_MANIFEST, child)
    body = encode(index_manifest([descriptor(OCI_MANIFEST, child)], subject=subject))
    r = put_manifest(registry.url, repo, digest(body), body)
    assert r.status_code == 201
    assert r.headers["OCI-Subject"] == subject["digest"]


def test_tags_with_invalid_tag_parameter(registry):
    repo = unique_repo()
    config, layer = config_and_layer(registry, repo)
    body = encode(image_manifest(config, [layer]))
    r = put_manifest(registry.url, repo, digest(body), body, tag=["ok", "-bad"])
    assert r.status_code == 400
    assert_error(r, 400)
    assert requests.get(f"{registry.url}/v2/{repo}/manifests/ok").status_code == 404


def test_refused_manifest_is_not_stored(registry):
    repo = unique_repo()
    config, _ = config_and_layer(registry, repo)
    body = encode(image_manifest(config, [descriptor(OCI_LAYER, random_blob(10))]))
    assert_error(put_manifest(registry.url, repo, "v1", body), 400, "MANIFEST_BLOB_UNKNOWN")
    assert not list(registry.data.rglob(digest(body).split(":")[1]))


def test_manifest_only_by_digest_has_empty_tag_list(registry):
    repo = unique_repo()
    push_image(registry.url, repo)
    r = requests.get(f"{registry.url}/v2/{repo}/tags/list")
    assert r.status_code == 200
    assert (r.json()["tags"] or []) == []
