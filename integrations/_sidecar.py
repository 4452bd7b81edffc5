"""nginx in front of a service, standing in for the Envoy sidecar / ingress gateway.

Like Envoy, it passes the trace headers through untouched and sets ``x-request-id`` when the
request came without one (nginx's own ``$request_id``: 32 hex digits, not a UUID, which is
exactly the kind of id meshprop must accept as it is).
"""

from __future__ import annotations

import contextlib
import shutil
import socket
from collections.abc import Iterator
from urllib.parse import urlsplit

from ._mesh import HOST, STARTUP_TIMEOUT, running_processes, wait_until_healthy
from .services._record import HEALTH_PATH

_CONFIG = """\
daemon off;
master_process off;
worker_processes 1;
pid {dir}/nginx.pid;
error_log stderr warn;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    map $http_x_request_id $mesh_request_id {{
        "" $request_id;
        default $http_x_request_id;
    }}
    server {{
        listen {host}:{port};
        location / {{
            proxy_pass {upstream};
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header X-Request-Id $mesh_request_id;
        }}
    }}
}}
"""
_ATTEMPTS = 3


def nginx_path() -> str:
    """The nginx binary (Debian's ``nginx`` package), or a clear error when it is missing."""
    path = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")
    if path is None:
        raise RuntimeError("nginx is not installed: apt-get install -y nginx")
    return path


def _free_port() -> int:
    # nginx cannot take an inherited socket, so it binds the port itself; a port taken in
    # between fails nginx's startup, and the caller tries another one.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
        return port


@contextlib.contextmanager
def running_sidecar(upstream_url: str) -> Iterator[str]:
    """Run nginx proxying to ``upstream_url`` (``http://127.0.0.1:PORT``); yield its base URL."""
    binary = nginx_path()
    upstream = urlsplit(upstream_url)
    for attempt in range(_ATTEMPTS):
        with running_processes() as processes:
            work_dir = processes.log_dir / "nginx"
            work_dir.mkdir()
            port = _free_port()
            config_path = work_dir / "nginx.conf"
            config_path.write_text(
                _CONFIG.format(
                    dir=work_dir,
                    host=HOST,
                    port=port,
                    upstream=f"{upstream.scheme}://{upstream.netloc}",
                )
            )
            processes.start(
                "nginx",
                [binary, "-p", str(work_dir), "-c", str(config_path), "-e", "stderr"],
            )
            base_url = f"http://{HOST}:{port}"
            try:
                wait_until_healthy([base_url + HEALTH_PATH], processes, STARTUP_TIMEOUT)
            except RuntimeError:
                if attempt + 1 == _ATTEMPTS:
                    raise
                continue
            yield base_url
            return
