"""nginx in front of a service, standing in for the Envoy sidecar / ingress gateway.

Like Envoy, it passes the trace headers through untouched and sets ``x-request-id`` when the
request came without one (nginx's own ``$request_id``: 32 hex digits, not a UUID, which is
exactly the kind of id meshprop must accept as it is). With a route timeout it also acts as
Envoy's router does with one: it tells the app the timeout in ``x-envoy-expected-rq-timeout-ms``
and answers 504 itself once the app has taken longer.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from urllib.parse import urlsplit

from ._debian import debian_binary, running_on_free_port
from ._mesh import HOST, STARTUP_TIMEOUT, _Processes, wait_until_healthy
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
{route_timeout}
        }}
    }}
}}
"""


_ROUTE_TIMEOUT = """\
            proxy_set_header X-Envoy-Expected-Rq-Timeout-Ms {milliseconds};
            proxy_read_timeout {milliseconds}ms;"""


@contextlib.contextmanager
def running_sidecar(upstream_url: str, *, route_timeout_ms: int | None = None) -> Iterator[str]:
    """Run nginx proxying to ``upstream_url`` (``http://127.0.0.1:PORT``); yield its base URL."""
    binary = debian_binary("nginx", package="nginx")
    upstream = urlsplit(upstream_url)

    def start(processes: _Processes, port: int) -> str:
        work_dir = processes.log_dir / "nginx"
        work_dir.mkdir()
        config_path = work_dir / "nginx.conf"
        config_path.write_text(
            _CONFIG.format(
                dir=work_dir,
                host=HOST,
                port=port,
                upstream=f"{upstream.scheme}://{upstream.netloc}",
                route_timeout=""
                if route_timeout_ms is None
                else _ROUTE_TIMEOUT.format(milliseconds=route_timeout_ms),
            )
        )
        processes.start(
            "nginx", [binary, "-p", str(work_dir), "-c", str(config_path), "-e", "stderr"]
        )
        base_url = f"http://{HOST}:{port}"
        wait_until_healthy([base_url + HEALTH_PATH], processes, STARTUP_TIMEOUT)
        return base_url

    with running_on_free_port(start) as base_url:
        yield base_url
