"""The first start: the admin account, its password, the signing key; secrets on disk and in logs."""
import json
import stat
import threading
import time

import pytest
import requests

from authhelpers import (ADMIN, PASSWORD, add_user, api_login, basic, can_login, cli, decode,
                         get_token, post_token, signing_key, token, token_response, user_names,
                         wait_until)

WARNING = "default password"


def start_without_admin_password(make_registry, config_text: str = ""):
    """A registry whose environment holds no DISTROFACE_ADMIN_PASSWORD at all."""
    reg = make_registry(config_text, start=False)
    reg.env.pop("DISTROFACE_ADMIN_PASSWORD", None)
    return reg.start()


def mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def hashes(reg) -> dict:
    return {name: u["password"] for name, u in
            json.loads((reg.data / "users.json").read_text())["users"].items()}


# -- the admin on first start ---------------------------------------------------------------

def test_admin_from_the_environment(make_registry):
    reg = make_registry()
    users = json.loads((reg.data / "users.json").read_text())["users"]
    assert list(users) == ["admin"]
    assert users["admin"]["groups"] == ["admins"]
    assert can_login(reg, *ADMIN)
    assert not can_login(reg, "admin", "admin")
    assert WARNING not in reg.logs()


def test_admin_from_the_config_file(make_registry):
    reg = start_without_admin_password(make_registry, '[auth]\ninitial_admin_password = "from-the-file"\n')
    assert can_login(reg, "admin", "from-the-file")
    assert not can_login(reg, "admin", "admin")
    assert WARNING not in reg.logs()


def test_environment_wins_over_the_file(make_registry):
    reg = make_registry('[auth]\ninitial_admin_password = "from-the-file"\n')
    assert can_login(reg, *ADMIN)
    assert not can_login(reg, "admin", "from-the-file")


@pytest.mark.parametrize("empty", [False, True], ids=["unset", "empty"])
def test_default_admin_password_warns_at_every_start(make_registry, empty):
    if empty:
        reg = make_registry(env={"DISTROFACE_ADMIN_PASSWORD": ""})
    else:
        reg = start_without_admin_password(make_registry)
    assert can_login(reg, "admin", "admin")
    assert reg.logs().count(WARNING) == 1
    assert "WARNING" in next(line for line in reg.logs().splitlines() if WARNING in line)

    reg.restart()
    assert reg.logs().count(WARNING) == 2

    r = basic("admin", "admin").put(f"{reg.url}/api/v1/users/me/password",
                                    json={"current_password": "admin", "new_password": PASSWORD})
    assert r.status_code == 200, r.text
    reg.restart()
    assert reg.logs().count(WARNING) == 2
    assert can_login(reg, "admin", PASSWORD)


def test_admin_password_is_set_only_once(make_registry):
    reg = make_registry()
    reg.stop()
    reg.env["DISTROFACE_ADMIN_PASSWORD"] = "a-different-password"
    reg.start()
    assert can_login(reg, *ADMIN)
    assert not can_login(reg, "admin", "a-different-password")


def test_bcrypt_work_factor(make_registry):
    default = make_registry(start=False)
    default.env.pop("DISTROFACE_BCRYPT_ROUNDS")
    default.start()
    add_user(default, "dev")
    assert hashes(default)["admin"].startswith("$2b$12$")
    assert hashes(default)["dev"].startswith("$2b$12$")

    configured = make_registry("[auth]\nbcrypt_rounds = 5\n", start=False)
    configured.env.pop("DISTROFACE_BCRYPT_ROUNDS")
    configured.start()
    add_user(configured, "dev")
    assert hashes(configured)["dev"].startswith("$2b$05$")


def test_bcrypt_runs_off_the_event_loop(make_registry):
    """While a costly password check runs, the server keeps answering."""
    reg = make_registry()
    proc = cli(reg, "add", "slow", "--password-stdin", input=PASSWORD + "\n",
               env={"DISTROFACE_BCRYPT_ROUNDS": "15"})
    assert proc.returncode == 0, proc.stderr
    wait_until(lambda: "slow" in user_names(reg), what="the new user")

    outcome = {}
    login = threading.Thread(target=lambda: outcome.update(r=token_response(reg, ("slow", PASSWORD))))
    login.start()
    time.sleep(0.3)  # let the login reach bcrypt
    healthy = requests.get(f"{reg.url}/healthz", timeout=60).status_code
    answered_during_login = login.is_alive()
    login.join()
    assert healthy == 200 and outcome["r"].status_code == 200
    assert answered_during_login


# -- the signing key ----------------------------------------------------------------------

def test_secrets_are_private(make_registry):
    reg = make_registry()
    add_user(reg, "dev")
    assert mode(reg.data / "users.json") == 0o600
    assert mode(reg.data / "secret" / "jwt.key") == 0o600
    assert mode(reg.data / "secret") & 0o077 == 0
    assert len(signing_key(reg)) >= 32


def test_key_survives_a_restart(make_registry):
    reg = make_registry()
    t = token(reg, ADMIN, "repository:team/app:pull")
    key = signing_key(reg)
    reg.restart()
    assert signing_key(reg) == key
    assert requests.get(f"{reg.url}/v2/team/app/tags/list",
                        headers={"Authorization": f"Bearer {t}"}).status_code == 404  # allowed, empty
    assert decode(token(reg, ADMIN))[0]["kid"] == decode(t)[0]["kid"]


def test_each_registry_has_its_own_key(make_registry):
    one, two = make_registry(), make_registry()
    assert signing_key(one) != signing_key(two)
    t = token(one, ADMIN, "repository:team/app:pull")
    r = requests.get(f"{two.url}/v2/team/app/tags/list", headers={"Authorization": f"Bearer {t}"})
    assert r.status_code == 401


# -- no secret in a log line -----------------------------------------------------------------

def test_logs_hold_no_password_or_token(make_registry):
    reg = make_registry()
    add_user(reg, "dev", ["developers"])
    wrong = "not-the-password-9f3a"
    secrets = [ADMIN[1], PASSWORD, wrong, "yet-another-password"]

    basic("dev", PASSWORD).get(f"{reg.url}/v2/")                         # Basic on /v2
    basic("dev", wrong).get(f"{reg.url}/v2/")                            # failed Basic
    body = get_token(reg, ("dev", PASSWORD), "repository:team/app:pull,push", offline=True)
    secrets += [body["token"], body["refresh_token"]]
    requests.get(f"{reg.url}/v2/team/app/tags/list", headers={"Authorization": f"Bearer {body['token']}"})
    r = post_token(reg, grant_type="password", username="dev", password=PASSWORD, access_type="offline")
    secrets += [r.json()["access_token"], r.json()["refresh_token"]]
    post_token(reg, grant_type="password", username="dev", password=wrong)
    r = post_token(reg, grant_type="refresh_token", refresh_token=body["refresh_token"])
    secrets.append(r.json()["access_token"])

    session = api_login(reg, "dev", PASSWORD)                            # the web API
    secrets += [session.headers["Authorization"].split()[1], session.cookies["distroface_refresh"]]
    requests.post(f"{reg.url}/api/v1/auth/login", json={"username": "dev", "password": wrong})
    session.get(f"{reg.url}/api/v1/users/me")
    secrets.append(session.post(f"{reg.url}/api/v1/auth/refresh").json()["access_token"])
    session.put(f"{reg.url}/api/v1/users/dev/password",
                json={"current_password": PASSWORD, "new_password": "yet-another-password"})
    session.post(f"{reg.url}/api/v1/auth/logout")

    logs = reg.logs()
    assert "/auth/token" in logs and "/api/v1/auth/login" in logs      # the requests were logged
    for secret in secrets:
        assert secret not in logs, f"a secret ({secret[:6]}...) appears in the server log"


def test_access_log_names_the_user(make_registry):
    reg = make_registry()
    basic(*ADMIN).get(f"{reg.url}/v2/")
    get_token(reg, ADMIN, "repository:team/app:pull")
    post_token(reg, grant_type="password", username="admin", password=ADMIN[1])
    api_login(reg, *ADMIN).get(f"{reg.url}/api/v1/users/me")
    lines = [line for line in reg.logs().splitlines() if "distroface.access" in line]
    requests_made = ('"GET /v2/"', '"GET /auth/token"', '"POST /auth/token"',
                     '"POST /api/v1/auth/login"', '"GET /api/v1/users/me"')
    assert all(any(request in line for line in lines) for request in requests_made)
    unnamed = [line for request in requests_made
               for line in lines if request in line and " admin " not in line]
    assert not unnamed, unnamed
