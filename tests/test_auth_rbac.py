"""Roles, groups and permissions: readers, developers, globs, ${user}, anonymous, live edits."""
import tomllib

import pytest
import requests

from authhelpers import (ADMIN, PASSWORD, access_of, add_user, basic, bearer, can_pull, challenge,
                         error_codes, push_image, start_upload_status, token, wait_until,
                         write_config)

PERSONAL = """
[roles.personal]
permissions = ["PUSH:IMAGE@${user}/**", "PULL:IMAGE@${user}/**", "DELETE:IMAGE@${user}/**"]

[roles.team-a]
permissions = ["PUSH:IMAGE@team-a/**", "PULL:IMAGE@team-a/**", "PULL:IMAGE@lib/*"]

[groups.personal]
roles = ["personal"]

[groups.team-a]
roles = ["team-a"]
"""


@pytest.fixture
def reg(make_registry):
    return make_registry(PERSONAL)


@pytest.fixture
def shared(reg):
    """An image at shared/app, pushed by the admin."""
    return push_image(reg, "shared/app", basic(*ADMIN))


def delete_status(reg, repo, session, digest) -> int:
    return session.delete(f"{reg.url}/v2/{repo}/manifests/{digest}").status_code


# -- the built-in groups ---------------------------------------------------------------

def test_reader_pulls_but_cannot_push_or_delete(reg, shared):
    rita = basic(*add_user(reg, "rita", ["readers"]))
    assert can_pull(reg, "shared/app", rita) == 200
    r = rita.get(f"{reg.url}/v2/shared/app/blobs/{shared.layer_digests[0]}")
    assert r.status_code == 200 and r.content == shared.blob(shared.layer_digests[0])

    r = rita.post(f"{reg.url}/v2/shared/app/blobs/uploads/")
    assert r.status_code == 403 and "DENIED" in error_codes(r)
    r = rita.put(f"{reg.url}/v2/shared/app/manifests/v2", data=shared.manifest,
                 headers={"Content-Type": shared.media_type})
    assert r.status_code == 403
    assert delete_status(reg, "shared/app", rita, shared.manifest_digest) == 403
    assert rita.delete(f"{reg.url}/v2/shared/app/blobs/{shared.config_digest}").status_code == 403
    assert can_pull(reg, "shared/app", basic(*ADMIN), shared.manifest_digest) == 200


def test_reader_token_holds_pull_only(reg, shared):
    user = add_user(reg, "rita", ["readers"])
    t = token(reg, user, "repository:shared/app:pull,push,delete")
    assert access_of(t) == {("repository", "shared/app"): ["pull"]}
    assert can_pull(reg, "shared/app", bearer(t)) == 200
    assert start_upload_status(reg, "shared/app", bearer(t)) == 401


def test_developer_pushes_pulls_and_deletes(reg):
    dev = basic(*add_user(reg, "dev", ["developers"]))
    image = push_image(reg, "team/app", dev)
    assert can_pull(reg, "team/app", dev) == 200
    assert delete_status(reg, "team/app", dev, image.manifest_digest) == 202
    assert can_pull(reg, "team/app", basic(*ADMIN), image.manifest_digest) == 404


def test_developer_through_tokens(reg):
    user = add_user(reg, "dev", ["developers"])
    t = token(reg, user, "repository:team/app:pull,push,delete")
    assert access_of(t) == {("repository", "team/app"): ["delete", "pull", "push"]}
    push_image(reg, "team/app", bearer(t))
    assert can_pull(reg, "team/app", bearer(token(reg, user, "repository:team/app:pull"))) == 200


def test_user_without_groups_gets_nothing(reg, shared):
    nobody = add_user(reg, "nobody")
    assert can_pull(reg, "shared/app", basic(*nobody)) == 403
    assert start_upload_status(reg, "shared/app", basic(*nobody)) == 403
    assert access_of(token(reg, nobody, "repository:shared/app:pull,push")) == {}


def test_several_groups_add_up(reg, shared):
    both = basic(*add_user(reg, "both", ["readers", "team-a"]))
    assert can_pull(reg, "shared/app", both) == 200
    push_image(reg, "team-a/app", both)
    assert start_upload_status(reg, "shared/app", both) == 403


# -- globs and ${user} ------------------------------------------------------------------

def test_user_namespace(reg):
    alice = basic(*add_user(reg, "alice", ["personal"]))
    bob = basic(*add_user(reg, "bob", ["personal"]))
    push_image(reg, "alice/app", alice)
    push_image(reg, "alice/deep/nested/app", alice)
    push_image(reg, "bob/app", bob)

    assert can_pull(reg, "alice/app", alice) == 200
    assert can_pull(reg, "bob/app", alice) == 403
    assert start_upload_status(reg, "bob/app", alice) == 403
    assert start_upload_status(reg, "alicex/app", alice) == 403
    assert start_upload_status(reg, "team/alice", alice) == 403
    assert can_pull(reg, "alice/app", bob) == 403


def test_user_namespace_in_tokens(reg):
    alice = add_user(reg, "alice", ["personal"])
    t = token(reg, alice, "repository:alice/app:pull,push", "repository:bob/app:pull,push",
              "repository:alice2/app:pull")
    assert access_of(t) == {("repository", "alice/app"): ["pull", "push"]}


def test_repository_globs(reg):
    push_image(reg, "lib/base", basic(*ADMIN))
    push_image(reg, "lib/deep/base", basic(*ADMIN))
    push_image(reg, "team-b/app", basic(*ADMIN))
    tina = basic(*add_user(reg, "tina", ["team-a"]))
    push_image(reg, "team-a/app", tina)
    push_image(reg, "team-a/x/y", tina)

    assert can_pull(reg, "lib/base", tina) == 200          # '*' is one component
    assert can_pull(reg, "lib/deep/base", tina) == 403     # ... not two
    assert start_upload_status(reg, "lib/base", tina) == 403
    assert can_pull(reg, "team-b/app", tina) == 403
    assert start_upload_status(reg, "team-b/app", tina) == 403
    assert start_upload_status(reg, "team-ab/app", tina) == 403


def test_catalog_lists_only_pullable_repositories(reg):
    for repo in ("team-a/app", "team-b/app", "lib/base", "alice/app"):
        push_image(reg, repo, basic(*ADMIN))
    add_user(reg, "tina", ["team-a"])
    add_user(reg, "alice", ["personal", "readers"])
    tina = basic("tina", PASSWORD)
    r = tina.get(f"{reg.url}/v2/_catalog")
    assert r.status_code == 200
    assert r.json()["repositories"] == ["lib/base", "team-a/app"]
    r = basic("alice", PASSWORD).get(f"{reg.url}/v2/_catalog")
    assert r.status_code == 200
    assert r.json()["repositories"] == ["alice/app", "lib/base", "team-a/app", "team-b/app"]


# -- anonymous ----------------------------------------------------------------------------

def test_anonymous_gets_nothing_by_default(reg, shared):
    for method, path in [("GET", "/v2/"), ("GET", "/v2/shared/app/manifests/v1"),
                         ("GET", f"/v2/shared/app/blobs/{shared.config_digest}"),
                         ("GET", "/v2/shared/app/tags/list"), ("GET", "/v2/_catalog"),
                         ("POST", "/v2/shared/app/blobs/uploads/"),
                         ("DELETE", f"/v2/shared/app/manifests/{shared.manifest_digest}")]:
        r = requests.request(method, reg.url + path)
        assert r.status_code == 401, (method, path, r.status_code)
        assert challenge(r)["realm"] == f"{reg.url}/auth/token"
    assert access_of(token(reg, None, "repository:shared/app:pull")) == {}


def test_anonymous_role_grants_pull_only(make_registry):
    reg = make_registry('[roles.anonymous]\npermissions = ["PULL:IMAGE", "VIEW:IMAGE"]\n')
    image = push_image(reg, "shared/app", basic(*ADMIN))
    anonymous = requests.Session()
    assert can_pull(reg, "shared/app", anonymous) == 200
    assert anonymous.get(f"{reg.url}/v2/shared/app/blobs/{image.config_digest}").status_code == 200
    assert anonymous.get(f"{reg.url}/v2/_catalog").json()["repositories"] == ["shared/app"]
    r = anonymous.post(f"{reg.url}/v2/shared/app/blobs/uploads/")
    assert r.status_code == 401
    assert challenge(r)["scope"] == "repository:shared/app:pull,push"
    assert anonymous.delete(f"{reg.url}/v2/shared/app/manifests/{image.manifest_digest}").status_code == 401

    t = token(reg, None, "repository:shared/app:pull,push")
    assert access_of(t) == {("repository", "shared/app"): ["pull"]}
    assert can_pull(reg, "shared/app", bearer(t)) == 200
    assert start_upload_status(reg, "shared/app", bearer(t)) == 401


# -- the TOML file, edited by a person while the server runs ------------------------------

READ_ONLY_TEAM = """
[roles.team]
permissions = ["PULL:IMAGE@team/**"]

[groups.team]
roles = ["team"]
"""

PUSHING_TEAM = """
[roles.team]
permissions = ["PULL:IMAGE@team/**", "PUSH:IMAGE@team/**"]

[groups.team]
roles = ["team"]
"""


def test_editing_the_file_changes_rights_within_seconds(make_registry):
    reg = make_registry(READ_ONLY_TEAM)
    tom = basic(*add_user(reg, "tom", ["team"]))
    assert start_upload_status(reg, "team/app", tom) == 403

    write_config(reg, PUSHING_TEAM)
    wait_until(lambda: start_upload_status(reg, "team/app", tom) == 202, what="push granted")
    t = token(reg, ("tom", PASSWORD), "repository:team/app:pull,push")
    assert access_of(t) == {("repository", "team/app"): ["pull", "push"]}

    write_config(reg, READ_ONLY_TEAM)
    wait_until(lambda: start_upload_status(reg, "team/app", tom) == 403, what="push revoked")
    # a token issued before the edit no longer carries the right either
    assert start_upload_status(reg, "team/app", bearer(t)) != 202


@pytest.mark.parametrize("broken, reason", [
    ("[roles.team\npermissions = [", "line 1"),                                           # not TOML
    ('[roles.team]\npermissions = ["FLY:IMAGE"]\n[groups.team]\nroles = ["team"]\n', "FLY:IMAGE"),
    ('[groups.team]\nroles = ["no-such-role"]\n', "no-such-role"),
    ('[roles.team]\npermissions = "PULL:IMAGE"\n', "permissions"),                        # not a list
], ids=["syntax", "permission", "role", "type"])
def test_invalid_file_keeps_the_old_rules(make_registry, broken, reason):
    reg = make_registry(PUSHING_TEAM)
    tom = basic(*add_user(reg, "tom", ["team"]))
    assert start_upload_status(reg, "team/app", tom) == 202
    refusals = reg.logs().count("refused")

    write_config(reg, broken)
    wait_until(lambda: reg.logs().count("refused") > refusals, what="the refusal in the log")
    refusal = [line for line in reg.logs().splitlines() if "refused" in line][-1]
    assert str(reg.config_path) in refusal and reason in refusal
    assert start_upload_status(reg, "team/app", tom) == 202
    assert can_pull(reg, "team/app", tom) == 404  # may pull; there is just nothing there yet

    write_config(reg, READ_ONLY_TEAM)  # a good file is picked up again afterwards
    wait_until(lambda: start_upload_status(reg, "team/app", tom) == 403, what="the next good file")


# -- edits through the API are written back to the file ---------------------------------

def test_api_role_edit_is_written_back_with_backup(make_registry):
    reg = make_registry(READ_ONLY_TEAM)
    tom = basic(*add_user(reg, "tom", ["team"]))
    original = reg.config_path.read_text()
    r = basic(*ADMIN).put(f"{reg.url}/api/v1/roles/team",
                          json={"description": "the team", "permissions": ["PULL:IMAGE@team/**",
                                                                           "PUSH:IMAGE@team/**"]})
    assert r.status_code == 200, r.text
    assert start_upload_status(reg, "team/app", tom) == 202

    written = tomllib.loads(reg.config_path.read_text())
    assert written["roles"]["team"] == {"description": "the team",
                                        "permissions": ["PULL:IMAGE@team/**", "PUSH:IMAGE@team/**"]}
    assert written["groups"]["team"]["roles"] == ["team"]
    assert reg.config_path.with_name("config.toml.bak").read_text() == original

    r = basic(*ADMIN).put(f"{reg.url}/api/v1/roles/team", json={"permissions": ["FLY:IMAGE"]})
    assert r.status_code == 400
    assert tomllib.loads(reg.config_path.read_text()) == written
    assert start_upload_status(reg, "team/app", tom) == 202


def test_api_group_edit_is_written_back(make_registry):
    reg = make_registry(READ_ONLY_TEAM)
    add_user(reg, "tom", ["team"])
    r = basic(*ADMIN).put(f"{reg.url}/api/v1/groups/team", json={"roles": ["team", "developer"]})
    assert r.status_code == 200, r.text
    assert tomllib.loads(reg.config_path.read_text())["groups"]["team"]["roles"] == ["team", "developer"]
    assert start_upload_status(reg, "elsewhere/app", basic("tom", PASSWORD)) == 202
    r = basic(*ADMIN).put(f"{reg.url}/api/v1/groups/team", json={"roles": ["no-such-role"]})
    assert r.status_code == 400
