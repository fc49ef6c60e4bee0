import random

import pytest
import requests

from apihelpers import assert_error, push_image, push_manifest, unique_repo, walk_pages

TAGS = ["a10", "a2", "b", "latest", "v1", "v1.0", "v1.0-rc1", "v1_1", "z9"]


@pytest.fixture(scope="module")
def tagged(registry):
    repo = unique_repo()
    _, body = push_image(registry.url, repo)
    for tag in random.sample(TAGS, len(TAGS)):
        push_manifest(registry.url, repo, tag, body)
    return repo


def tags_of(resp) -> list[str]:
    return resp.json()["tags"] or []


def test_tags_list(registry, tagged):
    r = requests.get(f"{registry.url}/v2/{tagged}/tags/list")
    assert r.status_code == 200
    assert r.json() == {"name": tagged, "tags": sorted(TAGS)}
    assert "Link" not in r.headers


def test_tags_first_page(registry, tagged):
    r = requests.get(f"{registry.url}/v2/{tagged}/tags/list?n=3")
    assert r.status_code == 200
    assert tags_of(r) == sorted(TAGS)[:3]
    assert r.links["next"]["url"].startswith(f"/v2/{tagged}/tags/list?")
    assert 'rel="next"' in r.headers["Link"]


def test_tags_follow_link_header(registry, tagged):
    pages = walk_pages(registry.url, f"/v2/{tagged}/tags/list?n=2")
    assert [t for p in pages for t in tags_of(p)] == sorted(TAGS)
    assert all(len(tags_of(p)) == 2 for p in pages[:-1])


def test_tags_last(registry, tagged):
    r = requests.get(f"{registry.url}/v2/{tagged}/tags/list?n=2&last=b")
    assert tags_of(r) == ["latest", "v1"]
    r = requests.get(f"{registry.url}/v2/{tagged}/tags/list?last=v1.0-rc1")
    assert tags_of(r) == ["v1_1", "z9"]


def test_tags_last_not_a_tag(registry, tagged):
    r = requests.get(f"{registry.url}/v2/{tagged}/tags/list?n=3&last=c")
    assert tags_of(r) == ["latest", "v1", "v1.0"]


def test_tags_n_zero(registry, tagged):
    r = requests.get(f"{registry.url}/v2/{tagged}/tags/list?n=0")
    assert r.status_code == 200
    assert tags_of(r) == []
    assert "Link" not in r.headers


def test_tags_n_larger_than_count(registry, tagged):
    r = requests.get(f"{registry.url}/v2/{tagged}/tags/list?n=1000")
    assert tags_of(r) == sorted(TAGS)
    assert "Link" not in r.headers


@pytest.mark.parametrize("n", ["abc", "-1", "1.5"])
def test_tags_bad_n(registry, tagged, n):
    assert_error(requests.get(f"{registry.url}/v2/{tagged}/tags/list?n={n}"), 400)


def test_tags_unknown_repository(registry):
    assert_error(requests.get(f"{registry.url}/v2/{unique_repo()}/tags/list"), 404, "NAME_UNKNOWN")


REPOS = ["alpha", "alpha/one", "alpha-beta", "b/c/d", "beta", "library/nginx", "z"]


@pytest.fixture(scope="module")
def catalog_registry(tmp_path_factory):
    from conftest import OPEN_CONFIG, Registry
    reg = Registry(tmp_path_factory.mktemp("catalog"), OPEN_CONFIG).start()
    for repo in random.sample(REPOS, len(REPOS)):
        push_image(reg.url, repo, "latest")
    yield reg
    reg.stop()


def test_catalog(catalog_registry):
    r = requests.get(catalog_registry.url + "/v2/_catalog")
    assert r.status_code == 200
    assert r.json() == {"repositories": sorted(REPOS)}


def test_catalog_follow_link_header(catalog_registry):
    pages = walk_pages(catalog_registry.url, "/v2/_catalog?n=3")
    assert pages[0].links["next"]["url"].startswith("/v2/_catalog?")
    assert [n for p in pages for n in p.json()["repositories"]] == sorted(REPOS)
    assert all(len(p.json()["repositories"]) == 3 for p in pages[:-1])


def test_catalog_last(catalog_registry):
    r = requests.get(catalog_registry.url + "/v2/_catalog?n=2&last=alpha-beta")
    assert r.json()["repositories"] == ["alpha/one", "b/c/d"]


def test_catalog_n_zero(catalog_registry):
    r = requests.get(catalog_registry.url + "/v2/_catalog?n=0")
    assert r.status_code == 200
    assert r.json()["repositories"] == []
    assert "Link" not in r.headers


def test_tags_last_after_everything(registry, tagged):
    r = requests.get(f"{registry.url}/v2/{tagged}/tags/list?n=5&last=zz")
    assert tags_of(r) == []
    assert "Link" not in r.headers


def test_empty_catalog(make_registry):
    from conftest import OPEN_CONFIG
    reg = make_registry(OPEN_CONFIG)
    r = requests.get(reg.url + "/v2/_catalog")
    assert r.status_code == 200
    assert (r.json()["repositories"] or []) == []
