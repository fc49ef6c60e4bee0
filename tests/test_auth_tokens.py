"""The Docker token service: challenges, GET and POST /auth/token, JWT claims, refresh tokens."""
import hashlib
import time
from datetime import datetime, timezone

import pytest
import requests

from authhelpers import (ADMIN, PASSWORD, SERVICE, access_of, add_user, basic, bearer, challenge,
                         decode, error_codes, get_token, post_token, push_image, signing_key,
                         token, token_response, wait_until)


@pytest.fixture
def reg(make_registry):
    return make_registry()


# -- the challenge -------------------------------------------------------------------

def test_v2_without_credentials_is_challenged(reg):
    r = requests.get(f"{reg.url}/v2/")
    assert r.status_code == 401
    assert "UNAUTHORIZED" in error_codes(r)
    params = challenge(r)
    assert params["realm"] == f"{reg.url}/auth/token"
    assert params["service"] == SERVICE


@pytest.mark.parametrize("method, path, scope", [
    ("GET", "/v2/team/app/manifests/v1", "repository:team/app:pull"),
    ("HEAD", "/v2/team/app/manifests/v1", "repository:team/app:pull"),
    ("GET", "/v2/team/app/tags/list", "repository:team/app:pull"),
    ("POST", "/v2/team/app/blobs/uploads/", "repository:team/app:pull,push"),
    ("PUT", "/v2/team/app/manifests/v1", "repository:team/app:pull,push"),
    ("DELETE", "/v2/team/app/manifests/v1", "repository:team/app:delete"),
    ("GET", "/v2/_catalog", "registry:catalog:*"),
])
def test_challenge_names_the_scope(reg, method, path, scope):
    r = requests.request(method, reg.url + path)
    assert r.status_code == 401
    params = challenge(r)
    assert params["scope"] == scope
    assert params["realm"] == f"{reg.url}/auth/token"
    assert "error" not in params


def test_token_without_the_action_gets_insufficient_scope(reg):
    push_image(reg, "team/app", basic(*ADMIN))
    pull_only = bearer(token(reg, ADMIN, "repository:team/app:pull"))
    assert pull_only.get(f"{reg.url}/v2/team/app/tags/list").status_code == 200
    r = pull_only.post(f"{reg.url}/v2/team/app/blobs/uploads/")
    assert r.status_code == 401
    params = challenge(r)
    assert params["error"] == "insufficient_scope"
    assert params["scope"] == "repository:team/app:pull,push"
    # the token is for team/app only
    r = pull_only.get(f"{reg.url}/v2/team/other/tags/list")
    assert r.status_code == 401
    assert challenge(r)["error"] == "insufficient_scope"


# -- GET /auth/token ---------------------------------------------------------------------

def test_get_token_response_fields(reg):
    before = time.time()
    body = get_token(reg, ADMIN, "repository:team/app:pull,push")
    assert body["token"] == body["access_token"]
    assert body["expires_in"] == 300
    assert "refresh_token" not in body
    issued = datetime.strptime(body["issued_at"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
    assert before - 2 <= issued.timestamp() <= time.time() + 1


def test_jwt_header_and_claims(reg):
    body = get_token(reg, ADMIN, "repository:team/app:pull,push")
    header, claims = decode(body["token"])
    assert header["alg"] == "HS256"
    assert header["kid"] == hashlib.sha256(signing_key(reg)).hexdigest()[:16]
    assert {"iss", "sub", "aud", "exp", "nbf", "iat", "jti", "access"} <= set(claims)
    assert claims["sub"] == "admin"
    assert claims["aud"] == SERVICE
    assert claims["exp"] - claims["iat"] == body["expires_in"]
    assert claims["nbf"] <= claims["iat"] < claims["exp"]
    assert claims["access"] == [{"type": "repository", "name": "team/app", "actions": ["pull", "push"]}]
    other = decode(token(reg, ADMIN, "repository:team/app:pull"))[1]
    assert other["jti"] != claims["jti"]


def test_token_lifetime_is_configurable(make_registry):
    reg = make_registry("[auth]\ntoken_lifetime = 120\n")
    body = get_token(reg, ADMIN, "repository:a/b:pull")
    claims = decode(body["token"])[1]
    assert body["expires_in"] == 120
    assert claims["exp"] - claims["iat"] == 120


def test_repeated_scope_parameters(reg):
    t = token(reg, ADMIN, "repository:one/app:pull", "repository:two/app:push,pull",
              "repository:three/app:delete")
    assert access_of(t) == {("repository", "one/app"): ["pull"],
                            ("repository", "two/app"): ["pull", "push"],
                            ("repository", "three/app"): ["delete"]}


def test_partial_grant_is_not_an_error(reg):
    user = add_user(reg, "rita", ["readers"])
    body = get_token(reg, user, "repository:team/app:pull,push,delete")
    assert access_of(body["token"]) == {("repository", "team/app"): ["pull"]}
    none = get_token(reg, add_user(reg, "nobody"), "repository:team/app:pull,push")
    assert access_of(none["token"]) == {}


def test_scope_with_resource_class(reg):
    """`repository(plugin)` is the same as `repository` (the class is deprecated and ignored)."""
    t = token(reg, ADMIN, "repository(plugin):team/app:pull")
    assert access_of(t) == {("repository", "team/app"): ["pull"]}


def test_scope_name_with_registry_host_and_port(reg):
    """The name may hold one ':' (host:port); it must not be cut at the first colons."""
    t = token(reg, ADMIN, "repository:localhost:5000/team/app:pull,push", "repository:team/app:pull")
    access = access_of(t)
    assert access.get(("repository", "team/app")) == ["pull"]
    assert not any(name in ("localhost", "localhost:5000") for _, name in access), access
    # No repository here can carry a host in its name, so the entry may be left out;
    # if it is granted, it must be the whole name with the asked actions.
    assert access.get(("repository", "localhost:5000/team/app"), ["pull", "push"]) == ["pull", "push"]


def test_catalog_scope(reg):
    push_image(reg, "team/app", basic(*ADMIN))
    t = token(reg, ADMIN, "registry:catalog:*")
    assert access_of(t) == {("registry", "catalog"): ["*"]}
    r = bearer(t).get(f"{reg.url}/v2/_catalog")
    assert r.status_code == 200
    assert r.json()["repositories"] == ["team/app"]
    r = bearer(token(reg, ADMIN, "repository:team/app:pull")).get(f"{reg.url}/v2/_catalog")
    assert r.status_code == 401
    assert challenge(r)["error"] == "insufficient_scope"
    assert access_of(token(reg, None, "registry:catalog:*")) == {}


def test_anonymous_token_is_empty_by_default(reg):
    body = get_token(reg, None, "repository:team/app:pull")
    claims = decode(body["token"])[1]
    assert claims["sub"] == ""
    assert claims["access"] == []


def test_bad_credentials_get_401(reg):
    r = token_response(reg, ("admin", "wrong-password"), ["repository:team/app:pull"])
    assert r.status_code == 401
    r = token_response(reg, ("no-such-user", "whatever-pw"), ["repository:team/app:pull"])
    assert r.status_code == 401


def test_unknown_service_is_refused(reg):
    r = token_response(reg, ADMIN, ["repository:team/app:pull"], service="someone-else")
    assert r.status_code == 400
    assert "token" not in r.text


def test_token_opens_the_registry(reg):
    image = push_image(reg, "team/app", bearer(token(reg, ADMIN, "repository:team/app:pull,push")))
    puller = bearer(token(reg, ADMIN, "repository:team/app:pull"))
    assert puller.get(f"{reg.url}/v2/team/app/blobs/{image.layer_digests[0]}").content == \
        image.blob(image.layer_digests[0])
    assert puller.get(f"{reg.url}/v2/").status_code == 200


# -- refresh tokens (offline_token, OAuth2 POST) ---------------------------------------------

def test_offline_token_gives_a_refresh_token(reg):
    body = get_token(reg, ADMIN, "repository:team/app:pull", offline=True)
    refresh = body["refresh_token"]
    assert refresh and refresh != body["token"]
    r = post_token(reg, grant_type="refresh_token", refresh_token=refresh,
                   scope="repository:team/app:pull,push repository:other/app:pull")
    assert r.status_code == 200, r.text
    fresh = r.json()
    assert access_of(fresh["access_token"]) == {("repository", "team/app"): ["pull", "push"],
                                                ("repository", "other/app"): ["pull"]}
    assert decode(fresh["access_token"])[1]["sub"] == "admin"
    assert fresh["refresh_token"] == refresh
    assert fresh["expires_in"] == 300


def test_post_password_grant(reg):
    r = post_token(reg, grant_type="password", username="admin", password=ADMIN[1],
                   access_type="offline", scope="repository:team/app:pull")
    assert r.status_code == 200, r.text
    body = r.json()
    assert access_of(body["access_token"]) == {("repository", "team/app"): ["pull"]}
    assert body["scope"] == "repository:team/app:pull"
    assert body["refresh_token"]
    assert isinstance(body["expires_in"], int)
    online = post_token(reg, grant_type="password", username="admin", password=ADMIN[1]).json()
    assert "refresh_token" not in online


def test_post_refuses_bad_requests(reg):
    assert post_token(reg, grant_type="password", username="admin",
                      password="wrong-password").status_code == 401
    assert post_token(reg, grant_type="refresh_token", refresh_token="garbage").status_code == 401
    assert post_token(reg, grant_type="authorization_code").status_code == 400
    r = requests.post(f"{reg.url}/auth/token", data={"grant_type": "password", "username": "admin",
                                                     "password": ADMIN[1], "service": SERVICE})
    assert r.status_code == 400  # client_id is required


def test_refresh_and_access_tokens_are_not_interchangeable(reg):
    body = get_token(reg, ADMIN, "repository:team/app:pull", offline=True)
    r = bearer(body["refresh_token"]).get(f"{reg.url}/v2/")
    assert r.status_code == 401
    r = post_token(reg, grant_type="refresh_token", refresh_token=body["token"])
    assert r.status_code == 401


def test_refresh_token_revoked_by_password_change(reg):
    add_user(reg, "dora", ["developers"])
    refresh = get_token(reg, ("dora", PASSWORD), offline=True)["refresh_token"]
    assert post_token(reg, grant_type="refresh_token", refresh_token=refresh).status_code == 200
    r = basic(*ADMIN).put(f"{reg.url}/api/v1/users/dora/password",
                          json={"new_password": "another-long-password"})
    assert r.status_code == 200, r.text
    assert post_token(reg, grant_type="refresh_token", refresh_token=refresh).status_code == 401


def test_refresh_token_revoked_by_user_deletion(reg):
    add_user(reg, "dora", ["developers"])
    refresh = get_token(reg, ("dora", PASSWORD), offline=True)["refresh_token"]
    assert basic(*ADMIN).delete(f"{reg.url}/api/v1/users/dora").status_code == 200
    assert post_token(reg, grant_type="refresh_token", refresh_token=refresh).status_code == 401


def test_refresh_token_does_not_come_back_with_a_new_user_of_the_same_name(reg):
    add_user(reg, "dora", ["admins"])
    refresh = get_token(reg, ("dora", PASSWORD), offline=True)["refresh_token"]
    assert basic(*ADMIN).delete(f"{reg.url}/api/v1/users/dora").status_code == 200
    add_user(reg, "dora", ["readers"], "someone-elses-password")   # a different person
    r = post_token(reg, grant_type="refresh_token", refresh_token=refresh)
    assert r.status_code == 401, r.text


def test_refresh_token_lifetime_is_configurable(make_registry):
    reg = make_registry("[auth]\nrefresh_token_lifetime = 2\n")
    refresh = get_token(reg, ADMIN, offline=True)["refresh_token"]
    r = requests.post(f"{reg.url}/api/v1/auth/login", json={"username": "admin", "password": ADMIN[1]})
    assert "Max-Age=2" in r.headers["Set-Cookie"]
    wait_until(lambda: post_token(reg, grant_type="refresh_token", refresh_token=refresh).status_code == 401,
               what="the refresh token to expire")


def test_token_in_the_url_is_not_accepted(reg):
    """Tokens travel in the Authorization header only, never in a URL (RFC 6750 access_token)."""
    t = token(reg, ADMIN, "repository:team/app:pull")
    assert requests.get(f"{reg.url}/v2/team/app/tags/list", params={"access_token": t}).status_code == 401
    assert requests.get(f"{reg.url}/api/v1/users/me", params={"access_token": t}).status_code == 401


def test_no_refresh_token_for_anonymous(reg):
    assert "refresh_token" not in get_token(reg, None, offline=True)


# -- HTTP Basic on /v2 -------------------------------------------------------------------

def test_v2_accepts_basic_directly(reg):
    image = push_image(reg, "team/app", basic(*ADMIN))
    r = basic(*ADMIN).get(f"{reg.url}/v2/team/app/blobs/{image.config_digest}")
    assert r.status_code == 200 and r.content == image.blob(image.config_digest)
    r = basic("admin", "wrong-password").get(f"{reg.url}/v2/team/app/tags/list")
    assert r.status_code == 401
    assert challenge(r)["scope"] == "repository:team/app:pull"


def test_basic_cache_does_not_outlive_a_password_change(reg):
    add_user(reg, "dora", ["developers"])
    dora = basic("dora", PASSWORD)
    assert dora.get(f"{reg.url}/v2/").status_code == 200
    r = basic(*ADMIN).put(f"{reg.url}/api/v1/users/dora/password",
                          json={"new_password": "another-long-password"})
    assert r.status_code == 200
    assert dora.get(f"{reg.url}/v2/").status_code == 401
    assert basic("dora", "another-long-password").get(f"{reg.url}/v2/").status_code == 200
