"""`nanochat-py serve` as a user starts it: bad addresses are one error line and exit 2, `--allowed-hosts`."""

from __future__ import annotations

import socket
import subprocess
import sys

import httpx
import pytest
from server_harness import ROOT, SOURCE, wait_for

from nanochat_py.server.serve import host_policy


def serve(*flags: str, timeout: float = 60) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "nanochat_py.cli", "serve", "--source", SOURCE, *flags]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def assert_one_error_line(result: subprocess.CompletedProcess, *words: str) -> None:
    assert result.returncode == 2, (result.returncode, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("nanochat-py: error: "), result.stderr
    assert "Traceback" not in result.stderr
    for word in words:
        assert word in lines[-1], lines[-1]


def test_a_port_in_use_is_one_error_line():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = serve("--host", "127.0.0.1", "--port", str(port))
    assert_one_error_line(result, str(port), "in use")
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_an_unresolvable_host_is_one_error_line():
    result = serve("--host", "no-such-host.invalid", "--port", "8000")
    assert_one_error_line(result, "no-such-host.invalid")
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


@pytest.mark.parametrize("port", ["99999", "-1"])
def test_a_port_out_of_range_is_an_error(port):
    assert_one_error_line(serve("--port", port), "--port", "65535")


def test_allowed_hosts_flag_reaches_the_server(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "nanochat_py.cli", "serve", "--source", SOURCE, "--port", str(port),
           "--allowed-hosts", "chat.example,other.example"]  # fmt: skip
    with open(tmp_path / "log", "wb") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/health"

    def status(host: str) -> int | None:
        try:
            return httpx.get(url, headers={"Host": host}, timeout=5).status_code
        except httpx.TransportError:
            return None

    try:
        assert wait_for(lambda: status("127.0.0.1") == 200, 60), (tmp_path / "log").read_text()
        assert status("chat.example") == 200 and status(f"other.example:{port}") == 200
        assert status("evil.example") == 421
    finally:
        proc.terminate()
        assert proc.wait(15) == 0


# --- which Host names a server answers to, by the address it is bound to -------------------------------------
@pytest.mark.parametrize("address", ["127.0.0.1", "::1", "127.0.0.5"])
def test_a_loopback_server_answers_only_loopback_names(address):
    names, any_ip = host_policy(address, "localhost", ())
    assert set(names) == {"localhost", "127.0.0.1", "::1"} and not any_ip


def test_a_server_bound_elsewhere_also_answers_ip_addresses_and_its_names():
    names, any_ip = host_policy("0.0.0.0", "0.0.0.0", ("chat.example",))
    assert any_ip and {"localhost", "chat.example", socket.gethostname().lower()} <= set(names)
    names, any_ip = host_policy("192.0.2.7", "box.example", ())
    assert any_ip and "box.example" in names


def test_a_star_answers_any_name():
    assert host_policy("127.0.0.1", "127.0.0.1", ("*",))[0] == ("*",)
