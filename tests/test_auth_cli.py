"""`distroface user add|passwd|del|list|groups` on the data directory of a running server."""
import json
import stat
import subprocess
import sys

import pytest

from authhelpers import (ADMIN, PASSWORD, basic, bearer, can_login, cli, cli_ok, get_token,
                         post_token, start_upload_status, token, user_names, wait_until)
from conftest import SERVER

NEW_PASSWORD = "a-brand-new-password"


@pytest.fixture
def reg(make_registry):
    return make_registry()


def users_file(reg) -> bytes:
    return (reg.data / "users.json").read_bytes()


def add(reg, name: str, groups: str = "", password: str = PASSWORD):
    return cli(reg, "add", name, "--groups", groups, "--password-stdin", input=password + "\n")


def test_add_while_the_server_runs(reg):
    proc = add(reg, "carol", "developers")
    assert proc.returncode == 0, proc.stderr
    assert PASSWORD not in proc.stdout + proc.stderr
    wait_until(lambda: "carol" in user_names(reg), what="the server to see the new user")
    assert can_login(reg, "carol", PASSWORD)
    assert start_upload_status(reg, "team/app", basic("carol", PASSWORD)) == 202
    stored = json.loads(users_file(reg))["users"]["carol"]
    assert stored["groups"] == ["developers"]
    assert stored["password"].startswith("$2b$04$")
    assert stat.S_IMODE((reg.data / "users.json").stat().st_mode) == 0o600


def test_list(reg):
    assert add(reg, "carol", "developers,readers").returncode == 0
    assert add(reg, "dave").returncode == 0
    lines = cli_ok(reg, "list").splitlines()
    assert lines == ["admin\tadmins", "carol\tdevelopers,readers", "dave\t"]


@pytest.mark.parametrize("name, groups, password", [
    ("carol", "developers", "short"),          # password policy
    ("carol", "no-such-group", PASSWORD),      # unknown group
    ("Carol!", "developers", PASSWORD),        # username grammar
    ("../x", "developers", PASSWORD),
    ("admin", "readers", PASSWORD),            # exists
])
def test_add_refused(reg, name, groups, password):
    before = users_file(reg)
    proc = add(reg, name, groups, password)
    assert proc.returncode != 0
    assert proc.stderr.strip()
    assert password not in proc.stdout + proc.stderr
    assert users_file(reg) == before


def test_password_policy_from_the_config(make_registry):
    reg = make_registry("[auth]\nmin_password_length = 20\n")
    proc = add(reg, "carol", "", "x" * 19)
    assert proc.returncode != 0 and "20" in proc.stderr
    assert add(reg, "carol", "", "x" * 20).returncode == 0


def test_passwd(reg):
    assert add(reg, "carol", "developers").returncode == 0
    wait_until(lambda: "carol" in user_names(reg))
    refresh = get_token(reg, ("carol", PASSWORD), offline=True)["refresh_token"]

    cli_ok(reg, "passwd", "carol", "--password-stdin", input=NEW_PASSWORD + "\n")
    wait_until(lambda: post_token(reg, grant_type="refresh_token", refresh_token=refresh).status_code == 401,
               what="the refresh token to be revoked")
    assert can_login(reg, "carol", NEW_PASSWORD)
    assert not can_login(reg, "carol", PASSWORD)
    proc = cli(reg, "passwd", "nobody", "--password-stdin", input=NEW_PASSWORD + "\n")
    assert proc.returncode != 0


def test_groups(reg):
    assert add(reg, "carol", "readers").returncode == 0
    wait_until(lambda: "carol" in user_names(reg))
    carol = basic("carol", PASSWORD)
    assert start_upload_status(reg, "team/app", carol) == 403
    cli_ok(reg, "groups", "carol", "--groups", "developers")
    wait_until(lambda: start_upload_status(reg, "team/app", carol) == 202, what="push granted")
    cli_ok(reg, "groups", "carol", "--groups", "")
    wait_until(lambda: start_upload_status(reg, "team/app", carol) == 403, what="push revoked")
    assert cli(reg, "groups", "carol", "--groups", "no-such-group").returncode != 0


def test_del(reg):
    assert add(reg, "carol", "developers").returncode == 0
    wait_until(lambda: "carol" in user_names(reg))
    access = token(reg, ("carol", PASSWORD), "repository:team/app:pull,push")
    refresh = get_token(reg, ("carol", PASSWORD), offline=True)["refresh_token"]

    cli_ok(reg, "del", "carol")
    wait_until(lambda: "carol" not in user_names(reg), what="the server to drop the user")
    assert not can_login(reg, "carol", PASSWORD)
    assert start_upload_status(reg, "team/app", bearer(access)) == 401
    assert post_token(reg, grant_type="refresh_token", refresh_token=refresh).status_code == 401
    assert "carol" not in cli_ok(reg, "list")
    assert cli(reg, "del", "carol").returncode != 0


def test_works_on_a_stopped_server_too(reg):
    reg.stop()
    assert add(reg, "carol", "developers").returncode == 0
    cli_ok(reg, "groups", "admin", "--groups", "admins,developers")
    reg.start()
    assert can_login(reg, "carol", PASSWORD)
    assert basic(*ADMIN).get(f"{reg.url}/api/v1/users/me").json()["groups"] == ["admins", "developers"]


def test_options_after_the_action(reg):
    """The documented form: `user add NAME --groups G --password-stdin --data DIR --config FILE`."""
    proc = subprocess.run(
        [sys.executable, str(SERVER), "user", "add", "carol", "--groups", "developers",
         "--password-stdin", "--data", str(reg.data), "--config", str(reg.config_path)],
        input=PASSWORD + "\n", capture_output=True, text=True, timeout=60, env=reg.env)
    assert proc.returncode == 0, proc.stderr
    wait_until(lambda: "carol" in user_names(reg), what="the server to see the new user")


def test_data_directory_from_the_environment(reg):
    proc = subprocess.run([sys.executable, str(SERVER), "user", "list"], capture_output=True, text=True,
                          timeout=60, env={**reg.env, "DISTROFACE_DATA": str(reg.data),
                                           "DISTROFACE_CONFIG": str(reg.config_path)})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["admin\tadmins"]
