"""dist/distroface.pyz: one file that serves on a Python with nothing installed.

The zipapp is built with zipapp/build.py (reused when it is newer than every
input) and started with the interpreter of an empty virtual environment in
isolated mode (`python -I`), so every import must come from inside the pyz.
"""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import urljoin

import pytest
import requests

from conftest import OPEN_CONFIG, ROOT, SERVER, Registry

pytestmark = pytest.mark.slow

DIST = ROOT / "dist"
PYZ = DIST / "distroface.pyz"
BUILD_SCRIPT = ROOT / "zipapp" / "build.py"


def build_inputs() -> list[Path]:
    ui = [p for p in (ROOT / "distroface_ui").rglob("*") if p.is_file()]
    return [SERVER, ROOT / "pyproject.toml", BUILD_SCRIPT, *ui]


@pytest.fixture(scope="module")
def pyz() -> Path:
    """dist/distroface.pyz, rebuilt unless it is newer than all it is built from."""
    newest_input = max(p.stat().st_mtime for p in build_inputs())
    if not PYZ.exists() or PYZ.stat().st_mtime < newest_input:
        done = subprocess.run([sys.executable, str(BUILD_SCRIPT)], capture_output=True, text=True,
                              timeout=600)
        if done.returncode != 0:
            pytest.fail(f"zipapp/build.py failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    assert PYZ.is_file()
    return PYZ


@pytest.fixture(scope="module")
def empty_python(tmp_path_factory) -> str:
    """The interpreter of a virtual environment whose site-packages is empty."""
    venv = tmp_path_factory.mktemp("empty-venv")
    subprocess.run([sys.executable, "-m", "venv", "--clear", "--without-pip", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    probe = subprocess.run([python, "-I", "-c", "import trio"], capture_output=True)
    assert probe.returncode != 0, "the empty venv can import trio; the test would prove nothing"
    return python


@pytest.fixture(scope="module")
def shiv_root(tmp_path_factory) -> Path:
    """A fresh unpack cache, so the first start really unpacks the native extensions."""
    return tmp_path_factory.mktemp("shiv-root")


@pytest.fixture(scope="module")
def pyz_registry(tmp_path_factory, pyz, empty_python, shiv_root):
    reg = Registry(tmp_path_factory.mktemp("pyz-registry"), OPEN_CONFIG,
                   env={"SHIV_ROOT": str(shiv_root)}, command=[empty_python, "-I", str(pyz)])
    reg.start()
    yield reg
    reg.stop()


def test_pyz_is_named_for_its_platform(pyz):
    """distroface.pyz is a copy of distroface-<python>-<platform>.pyz."""
    tag = f"cp{sys.version_info.major}{sys.version_info.minor}"
    named = list(DIST.glob(f"distroface-{tag}-*.pyz"))
    assert named, f"no dist/distroface-{tag}-<platform>.pyz beside {pyz.name}"
    assert any(p.read_bytes() == pyz.read_bytes() for p in named)
    assert pyz.read_bytes().startswith(b"#!/usr/bin/env python3\n")


def test_pyz_help(pyz, empty_python, shiv_root):
    done = subprocess.run([empty_python, "-I", str(pyz), "--help"], capture_output=True, text=True,
                          env={**os.environ, "SHIV_ROOT": str(shiv_root)}, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "usage" in (done.stdout + done.stderr).lower()


def test_pyz_serves_health_api_and_ui(pyz_registry, shiv_root):
    url = pyz_registry.url
    assert requests.get(url + "/healthz", timeout=10).status_code == 200

    v2 = requests.get(url + "/v2/", timeout=10)
    assert v2.status_code == 200, v2.text
    assert v2.headers.get("Docker-Distribution-API-Version") == "registry/2.0"

    page = requests.get(url + "/", timeout=10)
    assert page.status_code == 200
    assert page.headers["Content-Type"].startswith("text/html")
    assert "DistroFace" in page.text

    # The native extensions were unpacked into our own cache, not imported from the zip.
    assert any(shiv_root.iterdir()), "SHIV_ROOT stayed empty"


def test_pyz_blob_push_and_pull(pyz_registry):
    url = pyz_registry.url
    blob = os.urandom(3 * 1024 * 1024 + 17)
    digest = "sha256:" + hashlib.sha256(blob).hexdigest()
    repo = "zipapp/check"

    started = requests.post(f"{url}/v2/{repo}/blobs/uploads/", timeout=10)
    assert started.status_code == 202, started.text
    location = urljoin(url + "/", started.headers["Location"])

    put = requests.put(location, params={"digest": digest}, data=blob,
                       headers={"Content-Type": "application/octet-stream"}, timeout=60)
    assert put.status_code == 201, put.text
    assert put.headers.get("Docker-Content-Digest") == digest

    head = requests.head(f"{url}/v2/{repo}/blobs/{digest}", timeout=10)
    assert head.status_code == 200
    assert int(head.headers["Content-Length"]) == len(blob)

    got = requests.get(f"{url}/v2/{repo}/blobs/{digest}", timeout=60)
    assert got.status_code == 200
    assert got.content == blob
    assert got.headers.get("Docker-Content-Digest") == digest
