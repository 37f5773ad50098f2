"""The dashboard in a browser: textual-serve runs `mlxstory dashboard RUN` once per browser tab.

Each visitor gets their own dashboard process reading the run directory — replay, follow mode, `g`/`e`
samples from the latest checkpoint — and none of them can pause, save or stop the training: those
keys belong to the process that trains. textual-serve is the optional `web` extra.
"""

from __future__ import annotations

import shlex
import socket
import sys
from pathlib import Path
from typing import Any

from textual_serve.server import Server

from mlxstory.errors import MlxstoryError

WILDCARD_HOSTS = ("0.0.0.0", "::", "")


def dashboard_command_line(run_dir: Path, *, follow: bool) -> str:
    """The shell command textual-serve starts per browser tab (it runs it through a shell)."""
    return " ".join([shlex.quote(sys.executable), "-m", "mlxstory", "dashboard",
                     shlex.quote(str(run_dir.resolve())), "--follow" if follow else "--no-follow"])


def browser_url(host: str, port: int) -> str:
    """Where to point a browser: all-interfaces binds are reached by this machine's name."""
    name = socket.gethostname() if host in WILDCARD_HOSTS else host
    name = f"[{name}]" if ":" in name else name
    return f"http://{name}:{port}"


class DashboardServer(Server):
    """textual-serve's server, printing one line instead of its banner, and sending each browser the
    websocket address of the host name it used (a tunnel, a LAN name) rather than the bind address."""

    def __init__(self, run_dir: Path, *, host: str, port: int, follow: bool) -> None:
        super().__init__(dashboard_command_line(run_dir, follow=follow), host=host, port=port,
                         title=f"mlxstory dashboard · {run_dir.name}")
        self.run_dir = run_dir
        self.url = browser_url(host, port)

    async def on_startup(self, app: Any) -> None:
        self.console.print(f"serving the dashboard of {self.run_dir} at {self.url}  (Ctrl-C stops serving; "
                           "the run keeps training)", highlight=False, markup=False, soft_wrap=True)

    async def handle_index(self, request: Any) -> Any:
        # The page's websocket URL is built from public_url; the index handler builds it without awaiting,
        # so setting it per request here is safe on the server's single event loop.
        self.public_url = f"{request.scheme}://{request.host}"
        return await super().handle_index(request)


def serve_dashboard(run_dir: str | Path, *, host: str = "127.0.0.1", port: int = 8000,
                    follow: bool = True) -> None:
    """Serve the dashboard until Ctrl-C."""
    server = DashboardServer(Path(run_dir), host=host, port=port, follow=follow)
    try:
        server.serve()
    except OSError as error:  # the port is taken, or the host is not an address of this machine
        raise MlxstoryError(f"cannot serve on {host}:{port} ({error.strerror or error}); "
                            "pick another --port (or --host)") from None
