"""Helpers for the accounts / token service / RBAC tests.

Everything talks HTTP to a real server started by conftest's `make_registry`;
users are made through the API (as admin) or the `distroface user` CLI.
"""
from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Callable

import jwt
import requests
from requests.adapters import HTTPAdapter

from conftest import ADMIN_PASSWORD, SERVER
from ocilayout import Image, push_image_http, write_image

ADMIN = ("admin", ADMIN_PASSWORD)
SERVICE = "distroface"
PASSWORD = "correct-horse-battery"  # long enough for the default policy (8)


# -- waiting -----------------------------------------------------------------------

def wait_until(predicate: Callable[[], object], timeout: float = 15, what: str = "condition"):
    """Poll `predicate` until it returns something truthy (bounded; no timing asserts)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


# -- sessions ------------------------------------------------------------------------

def basic(user: str, password: str) -> requests.Session:
    s = requests.Session()
    s.auth = (user, password)
    return s


def bearer(token: str) -> requests.Session:
    s = requests.Session()
    s.headers["Authorization"] = f"Bearer {token}"
    return s


class SourceAddress(HTTPAdapter):
    """Connect from a chosen loopback address (127.0.0.x) to tell clients apart."""

    def __init__(self, address: str, **kwargs):
        self.address = address
        super().__init__(**kwargs)

    def init_poolmanager(self, *args, **kwargs):
        kwargs["source_address"] = (self.address, 0)
        super().init_poolmanager(*args, **kwargs)


def from_address(address: str, session: requests.Session | None = None) -> requests.Session:
    s = session or requests.Session()
    s.mount("http://", SourceAddress(address))
    return s


# -- the token service -------------------------------------------------------------

def token_response(reg, auth=None, scopes=(), service: str | None = SERVICE,
                   offline: bool = False, session: requests.Session | None = None) -> requests.Response:
    """GET /auth/token the way docker does: Basic credentials (or none), repeated scope."""
    params = [("service", service)] if service is not None else []
    params += [("scope", s) for s in scopes]
    if offline:
        params.append(("offline_token", "true"))
    return (session or requests).get(f"{reg.url}/auth/token", params=params, auth=auth)


def get_token(reg, auth=None, *scopes: str, offline: bool = False) -> dict:
    r = token_response(reg, auth, scopes, offline=offline)
    assert r.status_code == 200, (r.status_code, r.text)
    return r.json()


def token(reg, auth=None, *scopes: str) -> str:
    return get_token(reg, auth, *scopes)["token"]


def post_token(reg, session: requests.Session | None = None, **form) -> requests.Response:
    """POST /auth/token (OAuth2 form); client_id and service are filled in."""
    form = {"client_id": "distroface-tests", "service": SERVICE, **form}
    return (session or requests).post(f"{reg.url}/auth/token", data=form)


def decode(token_text: str) -> tuple[dict, dict]:
    """(header, claims) of a JWT, without checking anything."""
    return jwt.get_unverified_header(token_text), jwt.decode(token_text, options={"verify_signature": False})


def access_of(token_text: str) -> dict[tuple[str, str], list[str]]:
    """The token's access claim as {(type, name): sorted actions}."""
    return {(a["type"], a["name"]): sorted(a["actions"]) for a in decode(token_text)[1]["access"]}


def signing_key(reg) -> bytes:
    return (reg.data / "secret" / "jwt.key").read_bytes().strip()


def kid_of(key: bytes) -> str:
    return hashlib.sha256(key).hexdigest()[:16]


def valid_claims(sub: str, access: list[dict], lifetime: int = 300, **extra) -> dict:
    now = int(time.time())
    return {"iss": "distroface", "sub": sub, "aud": SERVICE, "exp": now + lifetime,
            "nbf": now - 1, "iat": now, "jti": uuid.uuid4().hex, "access": access, **extra}


def repo_access(name: str, *actions: str) -> dict:
    return {"type": "repository", "name": name, "actions": list(actions)}


def sign(claims: dict, key: bytes, kid: str | None = None, alg: str = "HS256") -> str:
    return jwt.encode(claims, key, algorithm=alg, headers={"kid": kid or kid_of(key)})


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned(claims: dict, header: dict) -> str:
    """A JWT with whatever header (e.g. alg none) and an empty signature."""
    return f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}."


def challenge(resp: requests.Response) -> dict[str, str]:
    """The parameters of a `WWW-Authenticate: Bearer k="v",...` header."""
    header = resp.headers.get("WWW-Authenticate", "")
    scheme, _, rest = header.partition(" ")
    assert scheme == "Bearer", header
    params = {}
    for part in _split_params(rest):
        key, _, value = part.partition("=")
        params[key.strip()] = value.strip().strip('"')
    return params


def _split_params(text: str) -> list[str]:
    parts, current, quoted = [], "", False
    for ch in text:
        if ch == '"':
            quoted = not quoted
        if ch == "," and not quoted:
            parts.append(current)
            current = ""
        else:
            current += ch
    return [p for p in parts + [current] if p.strip()]


def error_codes(resp: requests.Response) -> set[str]:
    try:
        return {e["code"] for e in resp.json()["errors"]}
    except (ValueError, KeyError, TypeError):
        return set()


# -- users ------------------------------------------------------------------------

def add_user(reg, name: str, groups=(), password: str = PASSWORD) -> tuple[str, str]:
    """Create a user through the API as admin; return (name, password)."""
    r = basic(*ADMIN).post(f"{reg.url}/api/v1/users",
                           json={"username": name, "password": password, "groups": list(groups)})
    assert r.status_code == 201, (r.status_code, r.text)
    return name, password


def cli(reg, *args: str, input: str | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    """`distroface user --data D --config C ACTION ...` on the registry's data and configuration.

    (The options go before the action: after it they are refused; see
    test_auth_cli.py::test_options_after_the_action.)"""
    return subprocess.run(
        [sys.executable, str(SERVER), "user", "--data", str(reg.data),
         "--config", str(reg.config_path), *args],
        input=input, capture_output=True, text=True, timeout=60, env={**reg.env, **(env or {})})


def cli_ok(reg, *args: str, input: str | None = None) -> str:
    proc = cli(reg, *args, input=input)
    assert proc.returncode == 0, (proc.returncode, proc.stdout, proc.stderr)
    return proc.stdout


def api_login(reg, user: str, password: str) -> requests.Session:
    """Log in through /api/v1/auth/login: the session holds the refresh cookie
    and sends the access token as Bearer."""
    s = requests.Session()
    r = s.post(f"{reg.url}/api/v1/auth/login", json={"username": user, "password": password})
    assert r.status_code == 200, (r.status_code, r.text)
    s.headers["Authorization"] = f"Bearer {r.json()['access_token']}"
    return s


def can_login(reg, user: str, password: str) -> bool:
    """One Basic login on /v2/ (a failure counts towards the login throttle: don't poll it)."""
    return requests.get(f"{reg.url}/v2/", auth=(user, password)).status_code == 200


def user_names(reg) -> set[str]:
    """The users the running server knows, as the admin sees them."""
    r = basic(*ADMIN).get(f"{reg.url}/api/v1/users")
    assert r.status_code == 200, r.text
    return {u["username"] for u in r.json()}


# -- configuration -----------------------------------------------------------------

def write_config(reg, text: str) -> None:
    """Replace the live TOML file atomically, as an editor would."""
    temp = reg.config_path.with_name(".config.toml.tmp")
    temp.write_text(text)
    temp.replace(reg.config_path)


# -- images ------------------------------------------------------------------------

def push_image(reg, repo: str, session: requests.Session, tag: str = "v1",
               seed: str | None = None) -> Image:
    """Write a small OCI image and push it with `session`; return the Image."""
    layout = Path(tempfile.mkdtemp(prefix="df-auth-"))
    image = write_image(layout, tag, layer_sizes=(512,), seed=seed or uuid.uuid4().hex)
    push_image_http(reg.url, repo, tag, image, session)
    return image


def can_pull(reg, repo: str, session: requests.Session, tag: str = "v1") -> int:
    """Status of a manifest GET (200 when the session may pull)."""
    return session.get(f"{reg.url}/v2/{repo}/manifests/{tag}",
                       headers={"Accept": "application/vnd.oci.image.manifest.v1+json"}).status_code


def start_upload_status(reg, repo: str, session: requests.Session) -> int:
    """Status of POST /v2/<repo>/blobs/uploads/ (202 when the session may push)."""
    return session.post(f"{reg.url}/v2/{repo}/blobs/uploads/").status_code
