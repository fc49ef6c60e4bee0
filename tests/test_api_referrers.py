import pytest
import requests

from apihelpers import (OCI_INDEX, OCI_MANIFEST, assert_error, descriptor, digest, encode,
                        image_manifest, index_manifest, push_artifact, push_blob, push_image,
                        push_manifest, random_blob, unique_repo)

SBOM = "application/vnd.example.sbom.v1"
SIG = "application/vnd.example.signature.v1"
CUSTOM_CONFIG = "application/vnd.example.config.v1+json"


def referrers(registry, repo, d, **params) -> requests.Response:
    r = requests.get(f"{registry.url}/v2/{repo}/referrers/{d}", params=params)
    assert r.status_code == 200, (r.status_code, r.text)
    assert r.headers["Content-Type"].split(";")[0] == OCI_INDEX
    body = r.json()
    assert body["schemaVersion"] == 2 and body["mediaType"] == OCI_INDEX
    return r


def by_digest(resp) -> dict[str, dict]:
    return {m["digest"]: m for m in resp.json()["manifests"]}


@pytest.fixture(scope="module")
def graph(registry):
    repo = unique_repo()
    subject_digest, subject_body = push_image(registry.url, repo, "v1")
    subject = descriptor(OCI_MANIFEST, subject_body)
    sbom, sbom_body = push_artifact(registry.url, repo, SBOM, subject,
                                    {"org.example.sbom.format": "json",
                                     "org.opencontainers.image.created": "2024-01-01T00:00:00Z"})
    sig, sig_body = push_artifact(registry.url, repo, SIG, subject, {"sig": "abcd"})

    config = b'{"custom": true}'
    push_blob(registry.url, repo, config)
    plain_body = encode(image_manifest(descriptor(CUSTOM_CONFIG, config), [], subject=subject))
    plain = push_manifest(registry.url, repo, digest(plain_body), plain_body)

    index_body = encode(index_manifest([descriptor(OCI_MANIFEST, sbom_body)], subject=subject,
                                       annotations={"kind": "index"}))
    index = push_manifest(registry.url, repo, digest(index_body), index_body)

    push_image(registry.url, repo, "unrelated")
    return dict(repo=repo, subject=subject_digest, sbom=(sbom, sbom_body),
                sig=(sig, sig_body), plain=(plain, plain_body), index=(index, index_body))


def test_lists_referrers(registry, graph):
    found = by_digest(referrers(registry, graph["repo"], graph["subject"]))
    expected = {graph[k][0] for k in ("sbom", "sig", "plain", "index")}
    assert set(found) == expected


def test_descriptor_fields(registry, graph):
    found = by_digest(referrers(registry, graph["repo"], graph["subject"]))
    sbom, sbom_body = graph["sbom"]
    assert found[sbom] == {
        "mediaType": OCI_MANIFEST, "digest": sbom, "size": len(sbom_body), "artifactType": SBOM,
        "annotations": {"org.example.sbom.format": "json",
                        "org.opencontainers.image.created": "2024-01-01T00:00:00Z"}}
    assert found[graph["sig"][0]]["artifactType"] == SIG
    assert found[graph["sig"][0]]["annotations"] == {"sig": "abcd"}


def test_artifact_type_falls_back_to_config_media_type(registry, graph):
    found = by_digest(referrers(registry, graph["repo"], graph["subject"]))
    plain, plain_body = graph["plain"]
    assert found[plain]["artifactType"] == CUSTOM_CONFIG
    assert found[plain]["size"] == len(plain_body)


def test_index_referrer_without_artifact_type(registry, graph):
    found = by_digest(referrers(registry, graph["repo"], graph["subject"]))
    index, index_body = graph["index"]
    assert found[index]["mediaType"] == OCI_INDEX
    assert found[index]["size"] == len(index_body)
    assert "artifactType" not in found[index]
    assert found[index]["annotations"] == {"kind": "index"}


def test_filter_by_artifact_type(registry, graph):
    r = referrers(registry, graph["repo"], graph["subject"], artifactType=SBOM)
    assert set(by_digest(r)) == {graph["sbom"][0]}
    assert r.headers["OCI-Filters-Applied"] == "artifactType"


def test_filter_without_match(registry, graph):
    r = referrers(registry, graph["repo"], graph["subject"], artifactType="application/none")
    assert r.json()["manifests"] == []
    assert r.headers["OCI-Filters-Applied"] == "artifactType"


def test_no_referrers_is_empty_list(registry, graph):
    r = referrers(registry, graph["repo"], graph["sbom"][0])
    assert r.json()["manifests"] == []
    r = referrers(registry, graph["repo"], digest(b"never pushed"))
    assert r.json()["manifests"] == []


def test_referrers_scoped_to_repository(registry, graph):
    other = unique_repo()
    push_image(registry.url, other, "v1")
    assert referrers(registry, other, graph["subject"]).json()["manifests"] == []


@pytest.mark.parametrize("bad", ["sha256:xyz", "latest", "sha256:" + "0" * 10, "md5:" + "0" * 32])
def test_invalid_digest(registry, graph, bad):
    r = requests.get(f"{registry.url}/v2/{graph['repo']}/referrers/{bad}")
    assert_error(r, 400)


def test_referrer_pushed_before_subject(registry):
    repo = unique_repo()
    future = encode(image_manifest(descriptor("application/vnd.oci.empty.v1+json", b"{}"), [],
                                   annotations={"n": random_blob(8).hex()}))
    art, _ = push_artifact(registry.url, repo, SBOM, descriptor(OCI_MANIFEST, future))
    assert set(by_digest(referrers(registry, repo, digest(future)))) == {art}
    push_manifest(registry.url, repo, digest(future), future)
    assert set(by_digest(referrers(registry, repo, digest(future)))) == {art}


def test_sha512_subject(registry):
    repo = unique_repo()
    _, body = push_image(registry.url, repo)
    d512 = digest(body, "sha512")
    assert push_manifest(registry.url, repo, d512, body) == d512
    subject = descriptor(OCI_MANIFEST, body, "sha512")
    art, _ = push_artifact(registry.url, repo, SIG, subject)
    found = by_digest(referrers(registry, repo, d512))
    assert set(found) == {art}
    assert found[art]["artifactType"] == SIG


def test_delete_referrer_removes_entry(registry):
    repo = unique_repo()
    d, body = push_image(registry.url, repo, "v1")
    subject = descriptor(OCI_MANIFEST, body)
    keep, _ = push_artifact(registry.url, repo, SBOM, subject)
    gone, _ = push_artifact(registry.url, repo, SIG, subject)
    assert requests.delete(f"{registry.url}/v2/{repo}/manifests/{gone}").status_code == 202
    assert set(by_digest(referrers(registry, repo, d))) == {keep}
