"""Start JupyterLab on notebooks/ the way ``make lab`` does, on any machine.

    python scripts/lab.py [--port 8888] [--ip localhost] [--token T] [--notebook-dir notebooks]
                          [--dry-run] [-- extra jupyter lab arguments]

What it adds to a plain ``jupyter lab notebooks/``:

* running as root (uid 0): ``--allow-root`` (JupyterLab refuses to start otherwise), and says so;
* no display (``$DISPLAY`` and ``$WAYLAND_DISPLAY`` unset, as on a server or in a container):
  ``--no-browser``, since there is no browser to open;
* the port: if the asked one (8888 by default) is taken, the next free one;
* the URL with its token printed on one line, before JupyterLab's own log.

``lab_command`` builds the command line and is a pure function (tested in tests/browser/test_lab.py);
``find_free_port`` picks the port. The browser test starts JupyterLab through this same script.
"""
from __future__ import annotations

import argparse
import errno
import os
import secrets
import socket
import sys
from pathlib import Path
from typing import List, Optional, Sequence

__all__ = ["DEFAULT_PORT", "lab_command", "lab_url", "port_is_free", "find_free_port", "main"]

DEFAULT_PORT = 8888
REPO_ROOT = Path(__file__).resolve().parent.parent


def lab_command(uid: int, display: Optional[str], port_free: int, *, notebook_dir: str = "notebooks",
                ip: str = "localhost", token: str = "", python: str = sys.executable,
                extra: Sequence[str] = ()) -> List[str]:
    """The ``jupyter lab`` command line.

    uid: the user id (``os.getuid()``); 0 adds ``--allow-root``.
    display: ``$DISPLAY`` (or ``$WAYLAND_DISPLAY``); empty or None adds ``--no-browser``.
    port_free: the port to serve on, already known to be free (see :func:`find_free_port`).
    token: the access token ("" lets JupyterLab draw one; give one to know the URL in advance).
    extra: further ``jupyter lab`` arguments, appended last so that they win.
    """
    cmd = [python, "-m", "jupyterlab", str(notebook_dir), f"--ServerApp.ip={ip}", f"--ServerApp.port={port_free}",
           # the port was checked just now: fail rather than silently drift to another one
           "--ServerApp.port_retries=0"]
    if token:
        cmd.append(f"--IdentityProvider.token={token}")
    if uid == 0:
        cmd.append("--allow-root")
    if not display:
        cmd.append("--no-browser")
    cmd.extend(extra)
    return cmd


def lab_url(ip: str, port: int, token: str) -> str:
    """The address to open (with ``?token=`` when the token is known)."""
    host = "localhost" if ip in ("", "0.0.0.0", "::") else ip
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}/lab" + (f"?token={token}" if token else "")


def port_is_free(port: int, host: str = "localhost") -> bool:
    """Whether a server could bind ``host:port`` now (every address the host name resolves to)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror:
        infos = [(socket.AF_INET, socket.SOCK_STREAM, 0, "", ("127.0.0.1", port))]
    for family, kind, proto, _, addr in infos:
        with socket.socket(family, kind, proto) as s:
            if sys.platform != "win32":  # as the server does: a port left in TIME_WAIT is free
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(addr)
            except OSError as e:
                if e.errno == errno.EADDRNOTAVAIL:  # e.g. ::1 on a host without IPv6: not a conflict
                    continue
                return False
    return True


def find_free_port(start: int = DEFAULT_PORT, host: str = "localhost", tries: int = 50) -> int:
    """The first free port among start, start + 1, ..., start + tries - 1."""
    for port in range(start, start + tries):
        if port_is_free(port, host):
            return port
    raise RuntimeError(f"no free port in {start}-{start + tries - 1} on {host}; pass --port")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python scripts/lab.py",
                                description="Start JupyterLab on the notebooks (root, headless and busy-port safe).",
                                epilog="Arguments after -- go to jupyter lab unchanged.")
    p.add_argument("--port", type=int, default=int(os.environ.get("PORT") or DEFAULT_PORT),
                   help="first port to try (default: $PORT or 8888); the next free one is used if it is taken")
    p.add_argument("--ip", default="localhost", help="address to listen on (default: localhost)")
    p.add_argument("--token", default=None,
                   help="access token (default: a fresh random one, printed in the URL)")
    p.add_argument("--notebook-dir", default=str(REPO_ROOT / "notebooks"), help="directory to serve")
    p.add_argument("--dry-run", action="store_true", help="print the command instead of running it")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra: List[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, extra = argv[:i], argv[i + 1:]
    args = _parser().parse_args(argv)
    token = secrets.token_hex(24) if args.token is None else args.token
    uid = os.getuid() if hasattr(os, "getuid") else 1
    display = os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
    if sys.platform in ("darwin", "win32"):
        display = display or "native"  # these always have a window system
    port = find_free_port(args.port, args.ip)
    cmd = lab_command(uid, display, port, notebook_dir=args.notebook_dir, ip=args.ip, token=token, extra=extra)

    say = lambda msg: print(f"[lab] {msg}", flush=True)
    if uid == 0:
        say("running as root: adding --allow-root")
    if not display:
        say("no display ($DISPLAY unset): --no-browser; open the URL below in your own browser")
    if port != args.port:
        say(f"port {args.port} is taken: using {port}")
    say(f"JupyterLab on {args.notebook_dir}")
    say(f"URL: {lab_url(args.ip, port, token)}")
    if args.dry_run:
        print(" ".join(cmd))
        return 0
    sys.stdout.flush()
    os.execv(cmd[0], cmd)  # the server takes this process over: Ctrl-C, signals and the pid are its own
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
