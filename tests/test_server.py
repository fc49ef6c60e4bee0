"""The process: command line and environment, TLS, signals, access log."""
import os
import signal
import subprocess
import sys
import threading
import time

import requests

from apihelpers import digest, random_blob, unique_repo
from conftest import OPEN_CONFIG, SERVER, Registry, free_port


def wait_healthy(url: str, proc: subprocess.Popen, **kwargs) -> None:
    for _ in range(300):
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else proc.returncode
        try:
            if requests.get(url + "/healthz", timeout=1, **kwargs).status_code == 200:
                return
        except requests.RequestException:
            time.sleep(0.05)
    raise AssertionError("server did not come up")


def test_environment_sets_listen_data_and_config(tmp_path):
    port = free_port()
    (tmp_path / "c.toml").write_text(OPEN_CONFIG)
    env = {**os.environ, "DISTROFACE_LISTEN": f"127.0.0.1:{port}",
           "DISTROFACE_DATA": str(tmp_path / "envdata"), "DISTROFACE_CONFIG": str(tmp_path / "c.toml")}
    proc = subprocess.Popen([sys.executable, str(SERVER)], env=env, cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_healthy(f"http://127.0.0.1:{port}", proc)
        blob = random_blob()
        r = requests.post(f"http://127.0.0.1:{port}/v2/env/test/blobs/uploads/?digest={digest(blob)}", data=blob)
        assert r.status_code == 201
        assert (tmp_path / "envdata" / "blobs").is_dir()
        assert not (tmp_path / "data").exists()
    finally:
        proc.terminate()
        proc.wait(15)


def test_sigterm_finishes_in_flight_request_and_exits_cleanly(make_registry):
    reg = make_registry(OPEN_CONFIG)
    repo = unique_repo()
    location = requests.post(f"{reg.url}/v2/{repo}/blobs/uploads/").headers["Location"]
    chunk = random_blob(64 * 1024)
    signalled = threading.Event()

    def slow_body():
        for i in range(20):
            if i == 5:
                reg.proc.send_signal(signal.SIGTERM)
                signalled.set()
            time.sleep(0.05)
            yield chunk

    r = requests.patch(reg.url + location, data=slow_body(), headers={"Content-Type": "application/octet-stream"})
    assert signalled.is_set()
    assert r.status_code == 202
    assert r.headers["Range"] == f"0-{20 * len(chunk) - 1}"
    assert reg.proc.wait(20) == 0
    assert "shutting down" in reg.logs()


def test_ctrl_c_exits_cleanly(make_registry):
    reg = make_registry(OPEN_CONFIG)
    reg.proc.send_signal(signal.SIGINT)
    assert reg.proc.wait(20) == 0


def test_tls(tmp_path, make_registry):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    reg = make_registry(OPEN_CONFIG + f'\n[server]\ntls_cert = "{cert}"\ntls_key = "{key}"\n', start=False)
    reg.url = f"https://{reg.host}"
    reg.start(wait=False)
    wait_healthy(reg.url, reg.proc, verify=str(cert))
    r = requests.get(f"{reg.url}/v2/", verify=str(cert))
    assert r.status_code == 200
    assert r.headers["Docker-Distribution-API-Version"] == "registry/2.0"
    try:
        requests.get(f"{reg.url}/v2/", timeout=5)
        raise AssertionError("an unknown certificate was accepted")
    except requests.exceptions.SSLError:
        pass


def test_access_log_has_one_line_per_request(make_registry):
    reg = make_registry(OPEN_CONFIG)
    requests.get(f"{reg.url}/v2/nothing/here/tags/list")
    requests.get(f"{reg.url}/healthz")
    for _ in range(100):
        lines = [line for line in reg.logs().splitlines() if "GET /v2/nothing/here/tags/list" in line]
        if lines and "/healthz" in reg.logs():
            break
        time.sleep(0.05)
    assert len(lines) == 1
    assert " 404 " in lines[0] and "ms" in lines[0]


def test_access_log_can_be_switched_off(make_registry):
    reg = make_registry(OPEN_CONFIG + "\n[server]\naccess_log = false\n")
    requests.get(f"{reg.url}/v2/nothing/here/tags/list")
    assert "/v2/nothing/here/tags/list" not in reg.logs()


def test_invalid_config_refuses_to_start(tmp_path):
    reg = Registry(tmp_path, "[registry]\nmax_manifest_size = 'big'\n")
    reg.start(wait=False)
    assert reg.proc.wait(20) != 0
    assert "max_manifest_size" in reg.logs()
