"""Attacks the registry must refuse: forged tokens, stolen scopes, blob leaks, '..', brute force."""
import json
import os
import time

import pytest
import requests

from apihelpers import raw_request
from authhelpers import (ADMIN, PASSWORD, access_of, add_user, b64url, basic, bearer,
                         challenge, decode, error_codes, from_address, get_token, kid_of,
                         push_image, repo_access, sign, signing_key, token, token_response, unsigned,
                         valid_claims)

TEAM = """
[roles.team-a]
permissions = ["PUSH:IMAGE@team-a/**", "PULL:IMAGE@team-a/**"]

[groups.team-a]
roles = ["team-a"]
"""


@pytest.fixture
def reg(make_registry):
    return make_registry(TEAM)


@pytest.fixture
def secret(reg):
    """An image only the admin may read, at secret/app."""
    return push_image(reg, "secret/app", basic(*ADMIN))


@pytest.fixture
def tina(reg):
    """A user who may push and pull team-a/** and nothing else."""
    return add_user(reg, "tina", ["team-a"])


def pull_secret(reg, session) -> requests.Response:
    return session.get(f"{reg.url}/v2/secret/app/manifests/v1",
                       headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})


# -- forged and stale tokens ---------------------------------------------------------------

def test_forged_token_with_the_real_key_works(reg, secret):
    """The control for the tests below: a well-formed token signed with the key is accepted."""
    t = sign(valid_claims("admin", [repo_access("secret/app", "pull")]), signing_key(reg))
    assert pull_secret(reg, bearer(t)).status_code == 200


@pytest.mark.parametrize("alg", ["none", "None", "NONE"])
def test_alg_none_is_refused(reg, secret, alg):
    key = signing_key(reg)
    claims = valid_claims("admin", [repo_access("secret/app", "pull")])
    t = unsigned(claims, {"alg": alg, "typ": "JWT", "kid": kid_of(key)})
    r = pull_secret(reg, bearer(t))
    assert r.status_code == 401
    assert "UNAUTHORIZED" in error_codes(r)


def test_token_signed_with_another_key_is_refused(reg, secret):
    claims = valid_claims("admin", [repo_access("secret/app", "pull")])
    other = os.urandom(32).hex().encode()
    assert pull_secret(reg, bearer(sign(claims, other))).status_code == 401
    # even when it claims the registry's key id
    assert pull_secret(reg, bearer(sign(claims, other, kid=kid_of(signing_key(reg))))).status_code == 401


def test_tampered_token_is_refused(reg, secret, tina):
    t = token(reg, tina, "repository:team-a/app:pull")
    header, payload, signature = t.split(".")
    claims = decode(t)[1]
    claims.update(sub="admin", access=[repo_access("secret/app", "pull")])
    forged = f"{header}.{b64url(json.dumps(claims).encode())}.{signature}"
    assert pull_secret(reg, bearer(forged)).status_code == 401


@pytest.mark.parametrize("change", [
    pytest.param(lambda now: {"exp": now - 10, "iat": now - 400, "nbf": now - 400}, id="expired"),
    pytest.param(lambda now: {"nbf": now + 600, "exp": now + 900}, id="not-yet-valid"),
    pytest.param(lambda now: {"aud": "another-registry"}, id="other-audience"),
    pytest.param(lambda now: {"iss": "someone-else"}, id="other-issuer"),
    pytest.param(lambda now: {"sub": "ghost"}, id="unknown-subject"),
])
def test_stale_or_foreign_token_is_refused(reg, secret, change):
    claims = valid_claims("admin", [repo_access("secret/app", "pull")])
    claims.update(change(int(time.time())))
    r = pull_secret(reg, bearer(sign(claims, signing_key(reg))))
    assert r.status_code == 401
    assert challenge(r)["realm"] == f"{reg.url}/auth/token"


def test_token_missing_expiry_is_refused(reg, secret):
    claims = valid_claims("admin", [repo_access("secret/app", "pull")])
    del claims["exp"]
    assert pull_secret(reg, bearer(sign(claims, signing_key(reg)))).status_code == 401


def test_token_of_a_deleted_user_is_refused(reg, secret):
    add_user(reg, "gone", ["admins"])
    t = token(reg, ("gone", PASSWORD), "repository:secret/app:pull")
    assert pull_secret(reg, bearer(t)).status_code == 200
    assert basic(*ADMIN).delete(f"{reg.url}/api/v1/users/gone").status_code == 200
    assert pull_secret(reg, bearer(t)).status_code == 401


# -- scopes the user does not hold -------------------------------------------------------

def test_scope_the_user_does_not_hold(reg, secret, tina):
    t = token(reg, tina, "repository:secret/app:pull,push", "repository:team-a/app:pull")
    assert access_of(t) == {("repository", "team-a/app"): ["pull"]}
    r = pull_secret(reg, bearer(t))
    assert r.status_code == 401
    assert challenge(r)["error"] == "insufficient_scope"
    assert pull_secret(reg, basic(*tina)).status_code == 403


def test_token_access_beyond_the_rules_is_not_honoured(reg, secret, tina):
    """A token naming more than the rules allow (say, minted before a demotion) opens nothing more."""
    t = sign(valid_claims("tina", [repo_access("secret/app", "pull", "push")]), signing_key(reg))
    assert pull_secret(reg, bearer(t)).status_code in (401, 403)
    assert bearer(t).post(f"{reg.url}/v2/secret/app/blobs/uploads/").status_code in (401, 403)


# -- blobs only through repositories that link them ------------------------------------------

def test_cross_repo_mount_needs_pull_on_the_source(reg, secret, tina):
    layer = secret.layer_digests[0]
    r = basic(*tina).post(f"{reg.url}/v2/team-a/app/blobs/uploads/",
                          params={"mount": layer, "from": "secret/app"})
    assert r.status_code == 202, (r.status_code, r.text)   # a plain upload session instead
    assert r.headers["Location"]
    assert basic(*ADMIN).head(f"{reg.url}/v2/team-a/app/blobs/{layer}").status_code == 404
    assert basic(*tina).get(f"{reg.url}/v2/team-a/app/blobs/{layer}").status_code == 404


def test_cross_repo_mount_with_a_token(reg, secret, tina):
    layer = secret.layer_digests[0]
    t = token(reg, tina, "repository:team-a/app:pull,push", "repository:secret/app:pull")
    r = bearer(t).post(f"{reg.url}/v2/team-a/app/blobs/uploads/",
                       params={"mount": layer, "from": "secret/app"})
    assert r.status_code == 202
    assert basic(*ADMIN).head(f"{reg.url}/v2/team-a/app/blobs/{layer}").status_code == 404


def test_cross_repo_mount_from_a_readable_repo(reg, secret, tina):
    """The control: where tina may pull the source, the mount succeeds."""
    image = push_image(reg, "team-a/base", basic(*tina))
    layer = image.layer_digests[0]
    r = basic(*tina).post(f"{reg.url}/v2/team-a/app/blobs/uploads/",
                          params={"mount": layer, "from": "team-a/base"})
    assert r.status_code == 201
    assert basic(*tina).get(f"{reg.url}/v2/team-a/app/blobs/{layer}").content == image.blob(layer)


def test_blob_only_through_a_repository_that_links_it(reg, secret, tina):
    push_image(reg, "team-a/app", basic(*tina))
    for digest in secret.blob_digests:
        for session in (basic(*tina), basic(*ADMIN)):
            r = session.get(f"{reg.url}/v2/team-a/app/blobs/{digest}")
            assert r.status_code == 404 and "BLOB_UNKNOWN" in error_codes(r)
            assert session.head(f"{reg.url}/v2/team-a/app/blobs/{digest}").status_code == 404
    r = basic(*tina).get(f"{reg.url}/v2/team-a/app/manifests/{secret.manifest_digest}")
    assert r.status_code == 404
    assert secret.manifest not in r.content


# -- names with '..' -------------------------------------------------------------------------

@pytest.mark.parametrize("path", [
    "/v2/team-a/../secret/app/manifests/v1",
    "/v2/team-a/%2e%2e/secret/app/manifests/v1",
    "/v2/team-a/..%2fsecret/app/manifests/v1",
    "/v2/team-a/app/../../secret/app/manifests/v1",
    "/v2/../secret/app/manifests/v1",
])
def test_dotdot_names_are_refused(reg, secret, tina, path):
    auth = {"Authorization": basic(*tina).prepare_request(
        requests.Request("GET", reg.url)).headers["Authorization"]}
    status, _, body = raw_request(reg.url, "GET", path, headers=auth)
    assert status in (400, 401, 403, 404), (status, body[:200])
    assert secret.manifest not in body


def test_dotdot_upload_creates_nothing(reg, tina):
    auth = {"Authorization": basic(*tina).prepare_request(
        requests.Request("GET", reg.url)).headers["Authorization"]}
    status, _, _ = raw_request(reg.url, "POST", "/v2/team-a/../../../escaped/blobs/uploads/", headers=auth)
    assert status in (400, 401, 403, 404)
    assert not list(reg.workdir.rglob("escaped"))


def test_dotdot_in_a_scope_grants_nothing(reg, secret, tina):
    t = token(reg, tina, "repository:team-a/../secret/app:pull", "repository:team-a/..:pull")
    assert access_of(t) == {}


# -- brute force -----------------------------------------------------------------------------

def test_login_burst_is_throttled(make_registry):
    reg = make_registry()
    statuses = [token_response(reg, ("admin", f"guess-{i}")).status_code for i in range(12)]
    assert statuses[:5] == [401] * 5
    assert statuses[5:] == [429] * 7
    r = token_response(reg, ADMIN)       # even the right password waits now
    assert r.status_code == 429
    assert int(r.headers["Retry-After"]) >= 1


def test_throttle_per_user(make_registry):
    reg = make_registry("[auth]\nlogin_max_failures = 3\n")
    add_user(reg, "victim")
    for i in range(2, 5):   # each attempt from its own address
        r = token_response(reg, ("victim", "guess"), session=from_address(f"127.0.0.{i}"))
        assert r.status_code == 401
    fresh = from_address("127.0.0.9")
    r = token_response(reg, ("victim", PASSWORD), session=fresh)
    assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1
    r = fresh.get(f"{reg.url}/v2/", auth=("victim", PASSWORD))
    assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1
    assert "TOOMANYREQUESTS" in error_codes(r)
    r = fresh.post(f"{reg.url}/api/v1/auth/login", json={"username": "victim", "password": PASSWORD})
    assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1
    assert token_response(reg, ADMIN, session=fresh).status_code == 200   # others are not affected


def test_throttle_per_address(make_registry):
    reg = make_registry("[auth]\nlogin_max_failures = 3\n")
    attacker = from_address("127.0.0.6")
    for name in ("root", "admin", "guest"):
        assert attacker.get(f"{reg.url}/v2/", auth=(name, "guess")).status_code == 401
    r = attacker.get(f"{reg.url}/v2/", auth=ADMIN)
    assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1
    assert token_response(reg, ADMIN, session=attacker).status_code == 429
    assert from_address("127.0.0.7").get(f"{reg.url}/v2/", auth=ADMIN).status_code == 200
    assert get_token(reg, ADMIN)["token"]
