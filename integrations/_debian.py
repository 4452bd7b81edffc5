"""A Debian service (redis-server, nginx) as a private instance on 127.0.0.1 for one test run.

``debian_binary("nginx", "nginx")`` finds the binary, installing its package with apt-get first
when it is missing (as the Makefile's ``sidecar`` and ``redis`` targets do);
``running_on_free_port(start)`` runs the instance ``start`` launches on a free loopback port,
and stops it on the way out whatever happens inside the ``with`` block.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
from collections.abc import Callable, Iterator

from ._mesh import HOST, _Processes, running_processes

_SEARCH_PATH = "/usr/bin:/usr/sbin:/usr/local/bin:/usr/local/sbin"
_ATTEMPTS = 3

#: ``start(processes, port)`` starts the server on ``port``, waits until it answers and returns
#: its URL; a server that exits meanwhile raises ``RuntimeError`` (``processes.check_alive``).
StartOnPort = Callable[[_Processes, int], str]


def debian_binary(command: str, package: str) -> str:
    """The path of ``command``, installed with apt-get from ``package`` first when it is missing."""
    path = shutil.which(command) or shutil.which(command, path=_SEARCH_PATH)
    if path is None and shutil.which("apt-get"):
        subprocess.run(["apt-get", "update", "-qq"], check=False, timeout=300)
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", package],
            check=False,
            timeout=600,
            env={"DEBIAN_FRONTEND": "noninteractive", "PATH": _SEARCH_PATH + ":/bin:/sbin"},
        )
        path = shutil.which(command, path=_SEARCH_PATH)
    if path is None:
        raise RuntimeError(f"{command} is not installed: apt-get install -y {package}")
    return path


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
        return port


@contextlib.contextmanager
def running_on_free_port(start: StartOnPort) -> Iterator[str]:
    """Yield the URL of the server ``start`` runs on a free loopback port; stop it on exit.

    These servers take no inherited socket and bind the port themselves, so a port can be taken
    between the probe and the bind: the server then exits, and another port is tried (three at
    most).
    """
    for attempt in range(_ATTEMPTS):
        with running_processes() as processes:
            try:
                url = start(processes, _free_port())
            except RuntimeError:
                if attempt + 1 == _ATTEMPTS:
                    raise
                continue
            yield url
            return
