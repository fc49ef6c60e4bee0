"""Real container clients (skopeo, docker, podman) for tests, with no network.

A test module imports the fixtures it needs: `from clients import dockerd, docker`.
Outside CI a missing tool skips the test; in CI (CI set) it fails it.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

DOCKER = "/usr/bin/docker"
DOCKERD = "/usr/sbin/dockerd"


def require(*tools: str) -> list[str]:
    """Return the full path of each tool; skip (or fail in CI) if one is missing."""
    paths = [shutil.which(t) for t in tools]
    missing = [t for t, p in zip(tools, paths) if p is None]
    if missing:
        message = f"missing tool(s): {', '.join(missing)} (scripts/install-test-deps.sh)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return paths


def run(args: list[str], env: dict | None = None, input: str | None = None,
        check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(a) for a in args], env={**os.environ, **(env or {})},
                          input=input, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, args))} exited {proc.returncode}\n"
                             f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
    return proc


def skopeo(*args, check: bool = True) -> subprocess.CompletedProcess:
    """Run skopeo without a signature policy check."""
    (exe,) = require("skopeo")
    return run([exe, "--insecure-policy", *args], check=check)


class Podman:
    """podman as root on private vfs storage; loopback registries over plain HTTP."""

    def __init__(self, root: Path):
        (exe,) = require("podman")
        self.base = [exe, "--root", root / "root", "--runroot", root / "run",
                     "--tmpdir", root / "tmp", "--storage-driver", "vfs",
                     "--cgroup-manager", "cgroupfs", "--events-backend", "none"]
        (root / "auth.json").write_text("{}")
        self.env = {"REGISTRY_AUTH_FILE": str(root / "auth.json")}

    def __call__(self, *args, check: bool = True, input: str | None = None):
        return run([*self.base, *args], env=self.env, check=check, input=input)

    def login(self, host: str, user: str, password: str):
        return self("login", "--tls-verify=false", "--username", user,
                    "--password-stdin", host, input=password)


class Docker:
    """The docker.io client bound to one daemon and its own client config dir."""

    def __init__(self, docker_host: str, config_dir: Path):
        self.env = {"DOCKER_HOST": docker_host, "DOCKER_CONFIG": str(config_dir)}

    def __call__(self, *args, check: bool = True, input: str | None = None):
        return run([DOCKER, *args], env=self.env, check=check, input=input)

    def login(self, host: str, user: str, password: str):
        return self("login", "--username", user, "--password-stdin", host, input=password)

    def image_id(self, ref: str) -> str:
        return self("image", "inspect", "--format", "{{.Id}}", ref).stdout.strip()


@pytest.fixture(scope="session")
def dockerd():
    """A private dockerd (vfs, no networking setup); yields its DOCKER_HOST."""
    require(DOCKERD, DOCKER)
    root = Path(tempfile.mkdtemp(prefix="df-dockerd-"))
    host = f"unix://{root}/docker.sock"
    log = open(root / "dockerd.log", "wb")
    proc = subprocess.Popen(
        [DOCKERD, "--storage-driver=vfs", "--iptables=false", "--ip-masq=false",
         "--bridge=none", "--data-root", root / "data", "--exec-root", root / "exec",
         "--pidfile", root / "docker.pid", "--host", host,
         "--insecure-registry", "127.0.0.0/8"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while run([DOCKER, "version"], env={"DOCKER_HOST": host}, check=False).returncode:
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail("dockerd did not start:\n"
                            + (root / "dockerd.log").read_text(errors="replace"))
            time.sleep(0.2)
        yield host
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def docker(dockerd, tmp_path) -> Docker:
    """A docker client on the shared daemon, with a fresh (logged-out) config."""
    return Docker(dockerd, tmp_path / "docker-config")


@pytest.fixture
def podman() -> Podman:
    """podman on fresh storage (short path: podman refuses a runroot over 50 chars)."""
    root = Path(tempfile.mkdtemp(prefix="df-podman-"))
    yield Podman(root)
    shutil.rmtree(root, ignore_errors=True)
