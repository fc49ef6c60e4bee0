"""Shared fixtures: a real DistroFace server on a loopback port."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

ROOT = Path(__file__).resolve().parent.parent
SERVER = ROOT / "distroface.py"
ADMIN_PASSWORD = "admin-secret-pw"

OPEN_CONFIG = """
[roles.anonymous]
permissions = ["PULL:IMAGE", "PUSH:IMAGE", "DELETE:IMAGE", "VIEW:IMAGE", "CREATE:TAG", "DELETE:TAG"]
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Registry:
    """A DistroFace process serving `data` on 127.0.0.1:<port>."""

    def __init__(self, workdir: Path, config_text: str = "", env: dict | None = None,
                 command: list[str] | None = None):
        self.workdir = workdir
        self.data = workdir / "data"
        self.config_path = workdir / "config.toml"
        self.config_path.write_text(config_text)
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.url = f"http://{self.host}"
        self.env = {**os.environ, "DISTROFACE_ADMIN_PASSWORD": ADMIN_PASSWORD,
                    "DISTROFACE_BCRYPT_ROUNDS": "4", **(env or {})}
        self.command = command or [sys.executable, str(SERVER)]
        self.log_path = workdir / "server.log"
        self.proc: subprocess.Popen | None = None

    def start(self, wait: bool = True) -> "Registry":
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [*self.command, "serve", "--listen", self.host, "--data", str(self.data),
             "--config", str(self.config_path)],
            env=self.env, stdout=self.log, stderr=subprocess.STDOUT)
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited {self.proc.returncode}:\n{self.logs()}")
            try:
                if requests.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"server not ready:\n{self.logs()}")

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> int | None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if getattr(self, "log", None):
            self.log.close()
        return self.proc.returncode if self.proc else None

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def restart(self) -> "Registry":
        self.stop()
        return self.start()

    def admin_session(self) -> requests.Session:
        s = requests.Session()
        s.auth = ("admin", ADMIN_PASSWORD)
        return s


@pytest.fixture
def make_registry(tmp_path_factory):
    """Factory: make_registry(config_text="", env=None) -> started Registry."""
    started: list[Registry] = []

    def make(config_text: str = "", env: dict | None = None, start: bool = True,
             command: list[str] | None = None) -> Registry:
        reg = Registry(tmp_path_factory.mktemp("registry"), config_text, env, command)
        started.append(reg)
        return reg.start() if start else reg

    yield make
    for reg in started:
        reg.stop()


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    """One open registry per test module: anonymous may pull, push and delete."""
    reg = Registry(tmp_path_factory.mktemp("open-registry"), OPEN_CONFIG).start()
    yield reg
    reg.stop()


@pytest.fixture
def http(registry) -> requests.Session:
    return requests.Session()


def have(tool: str) -> bool:
    return shutil.which(tool) is not None
