"""The web API: /api/v1/auth/*, users, roles and groups, each behind its permission."""
import json
import tomllib

import pytest
import requests

from authhelpers import (ADMIN, PASSWORD, add_user, api_login, basic, can_login, start_upload_status,
                         wait_until)

NEW_PASSWORD = "a-brand-new-password"

USER_ADMIN = """
[roles.user-admin]
permissions = ["VIEW:USER", "UPDATE:USER"]

[groups.helpdesk]
roles = ["user-admin"]
"""


@pytest.fixture
def reg(make_registry):
    return make_registry(USER_ADMIN)


def users_of(reg) -> dict:
    return json.loads((reg.data / "users.json").read_text())["users"]


# -- login, refresh, logout -------------------------------------------------------------

def test_login_returns_access_token_and_refresh_cookie(reg):
    r = requests.post(f"{reg.url}/api/v1/auth/login", json={"username": "admin", "password": ADMIN[1]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["access_token"] and body["expires_in"] == 300
    assert body["user"]["username"] == "admin"
    assert "refresh_token" not in body
    cookie = r.headers["Set-Cookie"]
    assert cookie.startswith("distroface_refresh=")
    attributes = {part.strip().split("=")[0].lower(): part.strip() for part in cookie.split(";")[1:]}
    assert "httponly" in attributes
    assert attributes["samesite"].lower() == "samesite=strict"
    assert attributes["path"] == "Path=/api/v1/auth"
    assert r.headers.get("Cache-Control") == "no-store"


def test_login_refused(reg):
    for body in ({"username": "admin", "password": "wrong-password"},
                 {"username": "ghost", "password": "wrong-password"},
                 {"username": "admin"}):
        r = requests.post(f"{reg.url}/api/v1/auth/login", json=body)
        assert r.status_code == 401, body
        assert "Set-Cookie" not in r.headers


def test_me(reg):
    session = api_login(reg, *ADMIN)
    me = session.get(f"{reg.url}/api/v1/users/me").json()
    assert me["username"] == "admin" and me["groups"] == ["admins"]
    assert "password" not in me
    assert basic(*ADMIN).get(f"{reg.url}/api/v1/users/me").json()["username"] == "admin"
    assert requests.get(f"{reg.url}/api/v1/users/me").status_code == 401


def test_refresh_with_the_cookie(reg):
    session = api_login(reg, *ADMIN)
    r = session.post(f"{reg.url}/api/v1/auth/refresh")
    assert r.status_code == 200, r.text
    fresh = r.json()["access_token"]
    r = requests.get(f"{reg.url}/api/v1/users/me", headers={"Authorization": f"Bearer {fresh}"})
    assert r.json()["username"] == "admin"
    assert requests.post(f"{reg.url}/api/v1/auth/refresh").status_code == 401


def test_logout_ends_the_session(reg):
    session = api_login(reg, *ADMIN)
    cookie = session.cookies.get("distroface_refresh", path="/api/v1/auth")
    r = session.post(f"{reg.url}/api/v1/auth/logout")
    assert r.status_code == 200
    assert "distroface_refresh" not in session.cookies
    r = requests.post(f"{reg.url}/api/v1/auth/refresh", cookies={"distroface_refresh": cookie})
    assert r.status_code == 401


def test_logout_survives_a_restart(reg):
    session = api_login(reg, *ADMIN)
    cookie = session.cookies.get("distroface_refresh", path="/api/v1/auth")
    assert session.post(f"{reg.url}/api/v1/auth/logout").status_code == 200
    reg.restart()
    r = requests.post(f"{reg.url}/api/v1/auth/refresh", cookies={"distroface_refresh": cookie})
    assert r.status_code == 401


# -- users ---------------------------------------------------------------------------------

def test_create_and_list_users(reg):
    add_user(reg, "dev", ["developers"])
    listed = {u["username"]: u for u in basic(*ADMIN).get(f"{reg.url}/api/v1/users").json()}
    assert set(listed) == {"admin", "dev"}
    assert listed["dev"]["groups"] == ["developers"]
    assert all("password" not in u for u in listed.values())
    stored = users_of(reg)["dev"]["password"]
    assert stored.startswith("$2b$04$") and PASSWORD not in stored  # bcrypt, rounds from the env
    assert can_login(reg, "dev", PASSWORD)


@pytest.mark.parametrize("body", [
    {"username": "shorty", "password": "short", "groups": []},              # password policy
    {"username": "Bad Name", "password": PASSWORD, "groups": []},           # username grammar
    {"username": "../etc", "password": PASSWORD, "groups": []},
    {"username": "ghost", "password": PASSWORD, "groups": ["no-such-group"]},
    {"username": "admin", "password": PASSWORD, "groups": []},              # exists
    {"username": "nopass", "groups": []},
])
def test_create_user_refused(reg, body):
    before = (reg.data / "users.json").read_bytes()
    r = basic(*ADMIN).post(f"{reg.url}/api/v1/users", json=body)
    assert r.status_code in (400, 409), (r.status_code, r.text)
    assert (reg.data / "users.json").read_bytes() == before


def test_password_policy_is_configurable(make_registry):
    reg = make_registry("[auth]\nmin_password_length = 12\n")
    r = basic(*ADMIN).post(f"{reg.url}/api/v1/users",
                           json={"username": "pat", "password": "x" * 11, "groups": []})
    assert r.status_code == 400
    add_user(reg, "pat", [], "x" * 12)


def test_set_groups(reg):
    add_user(reg, "dev", ["readers"])
    assert start_upload_status(reg, "team/app", basic("dev", PASSWORD)) == 403
    r = basic(*ADMIN).put(f"{reg.url}/api/v1/users/groups",
                          json={"username": "dev", "groups": ["developers"]})
    assert r.status_code == 200, r.text
    assert r.json()["groups"] == ["developers"]
    assert start_upload_status(reg, "team/app", basic("dev", PASSWORD)) == 202
    r = basic(*ADMIN).put(f"{reg.url}/api/v1/users/groups", json={"username": "dev", "groups": ["nope"]})
    assert r.status_code == 400


def test_delete_user(reg):
    add_user(reg, "dev", ["developers"])
    r = basic(*ADMIN).delete(f"{reg.url}/api/v1/users/dev")
    assert r.status_code == 200
    assert "dev" not in users_of(reg)
    assert not can_login(reg, "dev", PASSWORD)
    assert basic(*ADMIN).delete(f"{reg.url}/api/v1/users/dev").status_code in (400, 404)


def test_admin_cannot_delete_self_or_drop_last_admin_group(reg):
    admin = basic(*ADMIN)
    assert admin.delete(f"{reg.url}/api/v1/users/admin").status_code == 400
    r = admin.put(f"{reg.url}/api/v1/users/groups", json={"username": "admin", "groups": ["developers"]})
    assert r.status_code == 400
    assert users_of(reg)["admin"]["groups"] == ["admins"]
    # another administrator group may take over the role
    assert admin.put(f"{reg.url}/api/v1/groups/root", json={"roles": ["administrator"]}).status_code == 200
    r = admin.put(f"{reg.url}/api/v1/users/groups", json={"username": "admin", "groups": ["root"]})
    assert r.status_code == 200, r.text
    r = admin.put(f"{reg.url}/api/v1/users/groups", json={"username": "admin", "groups": []})
    assert r.status_code == 400
    assert users_of(reg)["admin"]["groups"] == ["root"]


# -- passwords ---------------------------------------------------------------------------------

def test_change_own_password(reg):
    add_user(reg, "dev", ["developers"])
    session = api_login(reg, "dev", PASSWORD)
    url = f"{reg.url}/api/v1/users/dev/password"
    assert session.put(url, json={"current_password": "wrong-password",
                                  "new_password": NEW_PASSWORD}).status_code == 403
    assert session.put(url, json={"current_password": PASSWORD, "new_password": "short"}).status_code == 400
    assert can_login(reg, "dev", PASSWORD)

    r = session.put(url, json={"current_password": PASSWORD, "new_password": NEW_PASSWORD})
    assert r.status_code == 200, r.text
    assert not can_login(reg, "dev", PASSWORD)
    assert can_login(reg, "dev", NEW_PASSWORD)
    # the web session's refresh cookie was revoked with the old password
    assert session.post(f"{reg.url}/api/v1/auth/refresh").status_code == 401


def test_change_own_password_through_me(reg):
    add_user(reg, "dev", ["developers"])
    r = basic("dev", PASSWORD).put(f"{reg.url}/api/v1/users/me/password",
                                   json={"current_password": PASSWORD, "new_password": NEW_PASSWORD})
    assert r.status_code == 200, r.text
    assert can_login(reg, "dev", NEW_PASSWORD)


def test_password_of_another_user(reg):
    add_user(reg, "dev", ["developers"])
    add_user(reg, "rita", ["readers"])
    r = basic("rita", PASSWORD).put(f"{reg.url}/api/v1/users/dev/password",
                                    json={"new_password": NEW_PASSWORD})
    assert r.status_code == 403
    assert can_login(reg, "dev", PASSWORD)
    r = basic(*ADMIN).put(f"{reg.url}/api/v1/users/dev/password", json={"new_password": NEW_PASSWORD})
    assert r.status_code == 200
    assert can_login(reg, "dev", NEW_PASSWORD)
    assert requests.put(f"{reg.url}/api/v1/users/dev/password",
                        json={"new_password": NEW_PASSWORD}).status_code == 401


# -- each endpoint behind its permission ----------------------------------------------------------

USER_CALLS = [
    ("GET", "/api/v1/users", None),
    ("POST", "/api/v1/users", {"username": "newbie", "password": PASSWORD, "groups": []}),
    ("PUT", "/api/v1/users/groups", {"username": "dev", "groups": ["admins"]}),
    ("DELETE", "/api/v1/users/dev", None),
    ("GET", "/api/v1/roles", None),
    ("GET", "/api/v1/groups", None),
    ("GET", "/api/v1/roles/developer", None),
    ("GET", "/api/v1/groups/admins", None),
    ("PUT", "/api/v1/roles/developer", {"permissions": ["ADMIN:SYSTEM"]}),
    ("DELETE", "/api/v1/roles/developer", None),
    ("PUT", "/api/v1/groups/developers", {"roles": ["administrator"]}),
    ("DELETE", "/api/v1/groups/developers", None),
]


@pytest.mark.parametrize("method, path, body", USER_CALLS)
def test_reader_and_developer_are_refused(reg, method, path, body):
    add_user(reg, "dev", ["developers"])
    add_user(reg, "rita", ["readers"])
    config_before = reg.config_path.read_bytes()
    users_before = (reg.data / "users.json").read_bytes()
    for user in ("dev", "rita"):
        r = basic(user, PASSWORD).request(method, reg.url + path, json=body)
        assert r.status_code == 403, (user, r.status_code, r.text)
    r = requests.request(method, reg.url + path, json=body)
    assert r.status_code == 401
    assert reg.config_path.read_bytes() == config_before
    assert (reg.data / "users.json").read_bytes() == users_before


def test_a_role_with_user_rights_only(reg):
    add_user(reg, "dev", ["readers"])
    add_user(reg, "peer", ["readers"])
    helper = basic(*add_user(reg, "helper", ["helpdesk"]))
    assert helper.get(f"{reg.url}/api/v1/users").status_code == 200
    r = helper.put(f"{reg.url}/api/v1/users/groups", json={"username": "peer", "groups": ["helpdesk"]})
    assert r.status_code == 403  # peer holds reader rights the helper lacks
    add_user(reg, "trainee", [])
    r = helper.put(f"{reg.url}/api/v1/users/groups", json={"username": "trainee", "groups": ["helpdesk"]})
    assert r.status_code == 200
    r = helper.put(f"{reg.url}/api/v1/users/trainee/password", json={"new_password": NEW_PASSWORD})
    assert r.status_code == 200
    r = helper.put(f"{reg.url}/api/v1/users/groups", json={"username": "dev", "groups": ["developers"]})
    assert r.status_code == 403
    r = helper.post(f"{reg.url}/api/v1/users",
                    json={"username": "newbie", "password": PASSWORD, "groups": []})
    assert r.status_code == 403
    assert helper.delete(f"{reg.url}/api/v1/users/dev").status_code == 403
    r = helper.put(f"{reg.url}/api/v1/roles/user-admin", json={"permissions": ["ADMIN:SYSTEM"]})
    assert r.status_code == 403


# -- roles and groups ----------------------------------------------------------------------------

def test_default_roles_and_groups(reg):
    admin = basic(*ADMIN)
    roles = admin.get(f"{reg.url}/api/v1/roles").json()
    assert {"administrator", "developer", "reader", "anonymous"} <= set(roles)
    assert roles["administrator"]["permissions"] == ["ADMIN:SYSTEM"]
    assert roles["anonymous"]["permissions"] == []
    assert "PUSH:IMAGE" in roles["developer"]["permissions"]
    assert "PUSH:IMAGE" not in roles["reader"]["permissions"]
    groups = admin.get(f"{reg.url}/api/v1/groups").json()
    assert groups["admins"]["roles"] == ["administrator"]
    assert groups["developers"]["roles"] == ["developer"]
    assert groups["readers"]["roles"] == ["reader"]
    assert admin.get(f"{reg.url}/api/v1/roles/reader").json()["permissions"] == roles["reader"]["permissions"]
    assert admin.get(f"{reg.url}/api/v1/roles/nope").status_code == 404
    assert admin.get(f"{reg.url}/api/v1/groups/nope").status_code == 404


def test_create_and_delete_role_and_group(reg):
    admin = basic(*ADMIN)
    r = admin.put(f"{reg.url}/api/v1/roles/ci",
                  json={"description": "CI", "permissions": ["PUSH:IMAGE@ci/**", "PULL:IMAGE@ci/**"]})
    assert r.status_code == 200, r.text
    assert admin.put(f"{reg.url}/api/v1/groups/robots", json={"roles": ["ci"]}).status_code == 200
    robot = basic(*add_user(reg, "robot", ["robots"]))
    assert start_upload_status(reg, "ci/app", robot) == 202
    assert start_upload_status(reg, "team/app", robot) == 403

    assert admin.delete(f"{reg.url}/api/v1/groups/robots").status_code == 200
    assert admin.delete(f"{reg.url}/api/v1/roles/ci").status_code == 200
    written = tomllib.loads(reg.config_path.read_text())
    assert "ci" not in written.get("roles", {}) and "robots" not in written.get("groups", {})
    assert start_upload_status(reg, "ci/app", robot) == 403
    assert admin.get(f"{reg.url}/api/v1/roles/ci").status_code == 404


def test_role_in_use_cannot_be_deleted(reg):
    r = basic(*ADMIN).delete(f"{reg.url}/api/v1/roles/user-admin")
    assert r.status_code == 400
    assert "user-admin" in tomllib.loads(reg.config_path.read_text())["roles"]


@pytest.mark.parametrize("name", ["Bad Name", "a.b", "-x", "a" * 65])
def test_role_names_are_checked(reg, name):
    r = basic(*ADMIN).put(f"{reg.url}/api/v1/roles/{name}", json={"permissions": []})
    assert r.status_code in (400, 404)
    assert name not in tomllib.loads(reg.config_path.read_text()).get("roles", {})


def test_api_edit_while_the_file_on_disk_is_broken(reg):
    """A person left a typo in the file (refused; the old rules stay in force):
    an API edit must neither crash nor clobber the file."""
    broken = "[roles.team\npermissions = [\n"
    reg.config_path.write_text(broken)
    wait_until(lambda: "refused" in reg.logs(), what="the refusal")
    r = basic(*ADMIN).put(f"{reg.url}/api/v1/roles/ci", json={"permissions": ["PULL:IMAGE"]})
    assert 400 <= r.status_code < 500, (r.status_code, r.text[:200])
    assert r.headers["Content-Type"].startswith("application/json")
    assert reg.config_path.read_text() == broken


# -- no escalation -------------------------------------------------------------------------------

def test_user_admin_cannot_reach_above_their_rights(reg):
    helper = basic(*add_user(reg, "helper", ["helpdesk"]))
    r = helper.put(f"{reg.url}/api/v1/users/groups", json={"username": "helper", "groups": ["admins"]})
    assert r.status_code == 403
    assert helper.put(f"{reg.url}/api/v1/users/admin/password",
                      json={"new_password": NEW_PASSWORD}).status_code == 403
    r = helper.put(f"{reg.url}/api/v1/users/groups", json={"username": "admin", "groups": []})
    assert r.status_code == 403
    assert users_of(reg)["helper"]["groups"] == ["helpdesk"]
    assert users_of(reg)["admin"]["groups"] == ["admins"]
    assert can_login(reg, *ADMIN)


def test_group_editor_cannot_attach_the_administrator_role(make_registry):
    reg = make_registry(USER_ADMIN + '\n[roles.group-admin]\npermissions = ["VIEW:GROUP", "UPDATE:GROUP"]\n'
                        '[groups.groupies]\nroles = ["group-admin"]\n')
    editor = basic(*add_user(reg, "editor", ["groupies"]))
    r = editor.put(f"{reg.url}/api/v1/groups/groupies", json={"roles": ["group-admin", "administrator"]})
    assert r.status_code == 403
    assert "administrator" not in reg.config_path.read_text()


def test_registry_token_is_not_a_web_session(reg):
    from authhelpers import token
    registry_token = token(reg, ADMIN, "repository:x/y:pull")
    r = requests.get(f"{reg.url}/api/v1/users", headers={"Authorization": f"Bearer {registry_token}"})
    assert r.status_code == 401
    web_token = api_login(reg, *ADMIN).post(f"{reg.url}/api/v1/auth/refresh").json()["access_token"]
    r = requests.get(f"{reg.url}/v2/", headers={"Authorization": f"Bearer {web_token}"})
    assert r.status_code == 401


def test_web_login_needs_login_webui(reg):
    add_user(reg, "nobody", [])
    r = requests.post(f"{reg.url}/api/v1/auth/login", json={"username": "nobody", "password": PASSWORD})
    assert r.status_code == 403
    assert "Set-Cookie" not in r.headers
