"""scripts/lab.py, the entry behind ``make lab``: the command line it builds (root, headless, port)
and the free-port search. No browser needed."""
import importlib.util
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "lab.py"


def _load_lab():
    spec = importlib.util.spec_from_file_location("lab_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


lab = _load_lab()


def _listening_socket():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    s.listen()
    return s


def test_root_gets_allow_root_and_others_do_not():
    assert "--allow-root" in lab.lab_command(0, ":0", 8888)
    assert "--allow-root" not in lab.lab_command(1000, ":0", 8888)


@pytest.mark.parametrize("display", [None, ""])
def test_no_display_means_no_browser(display):
    assert "--no-browser" in lab.lab_command(1000, display, 8888)


def test_display_lets_jupyter_open_a_browser():
    assert "--no-browser" not in lab.lab_command(1000, ":0", 8888)


def test_command_serves_the_notebooks_on_the_given_port():
    cmd = lab.lab_command(1000, ":0", 8893, notebook_dir="nbs", ip="127.0.0.1", token="tok",
                          python="py", extra=["--ServerApp.foo=1"])
    assert cmd[:4] == ["py", "-m", "jupyterlab", "nbs"]
    assert "--ServerApp.port=8893" in cmd and "--ServerApp.ip=127.0.0.1" in cmd
    assert "--ServerApp.port_retries=0" in cmd  # never drift away from the port that was checked
    assert "--IdentityProvider.token=tok" in cmd
    assert cmd[-1] == "--ServerApp.foo=1"  # extra arguments last, so they win


def test_no_token_lets_jupyter_draw_one():
    assert not [a for a in lab.lab_command(0, None, 8888) if "token" in a.lower()]


def test_lab_url():
    assert lab.lab_url("127.0.0.1", 8890, "abc") == "http://127.0.0.1:8890/lab?token=abc"
    assert lab.lab_url("0.0.0.0", 8888, "") == "http://localhost:8888/lab"


def test_find_free_port_skips_a_taken_port():
    with _listening_socket() as s:
        taken = s.getsockname()[1]
        assert not lab.port_is_free(taken, "127.0.0.1")
        port = lab.find_free_port(taken, "127.0.0.1")
        assert port > taken and lab.port_is_free(port, "127.0.0.1")


def test_find_free_port_keeps_a_free_port():
    with _listening_socket() as s:
        port = s.getsockname()[1]
    assert lab.find_free_port(port, "127.0.0.1") == port


def test_find_free_port_gives_up_with_a_clear_error():
    with _listening_socket() as s:
        taken = s.getsockname()[1]
        with pytest.raises(RuntimeError, match="no free port"):
            lab.find_free_port(taken, "127.0.0.1", tries=1)


def test_dry_run_says_what_it_does_when_the_port_is_taken():
    """The script as make lab runs it: headless (no DISPLAY) and with the first port busy."""
    with _listening_socket() as s:
        taken = s.getsockname()[1]
        env = {"PATH": "/usr/bin:/bin", "HOME": str(Path.home())}
        out = subprocess.run([sys.executable, str(SCRIPT), "--port", str(taken), "--ip", "127.0.0.1",
                              "--token", "abc", "--dry-run", "--", "--ServerApp.foo=1"],
                             capture_output=True, text=True, env=env, check=True).stdout
    assert f"port {taken} is taken: using" in out
    assert "no display" in out and "--no-browser" in out
    assert "URL: http://127.0.0.1:" in out and "/lab?token=abc" in out
    assert out.rstrip().endswith("--ServerApp.foo=1")
    if os.getuid() == 0:
        assert "running as root: adding --allow-root" in out and "--allow-root" in out.splitlines()[-1]


def test_help():
    out = subprocess.run([sys.executable, str(SCRIPT), "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "usage: python scripts/lab.py" in out.stdout
