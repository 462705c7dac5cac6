"""Running the application on uvicorn: local by default, and loud when it is not."""
from __future__ import annotations

import ipaddress
import socket
import sys
from collections.abc import Callable

import uvicorn
from starlette.applications import Starlette

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


def is_local(host: str) -> bool:
    """Whether `host` is reachable from this machine only (a loopback address or "localhost")."""
    if host in LOCAL_HOSTS:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def exposure_warning(host: str, port: int) -> str | None:
    """The warning printed when the server listens beyond this machine (None when it does not)."""
    if is_local(host):
        return None
    return ("WARNING: captionlens serve is listening on " f"{host}:{port}, not on 127.0.0.1: anyone who can reach "
            "this machine on that port can use the model and upload images, and the page asks for no password. "
            "Use --host 127.0.0.1 (the default) unless you mean it.")


def url(host: str, port: int) -> str:
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    return f"http://[{shown}]:{port}/" if ":" in shown else f"http://{shown}:{port}/"


class AnnouncingServer(uvicorn.Server):
    """uvicorn's server, which says where it listens once it does (port 0: the free port it got)."""

    def __init__(self, config: uvicorn.Config, say: Callable[[str], None]) -> None:
        super().__init__(config)
        self.say = say
        self.port: int | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            self.port = int(self.servers[0].sockets[0].getsockname()[1])
            self.say(f"captionlens serve: open {url(self.config.host, self.port)} (Ctrl+C stops it)")


def run(app: Starlette, host: str = "127.0.0.1", port: int = 8000, say: Callable[[str], None] = print) -> None:
    """Serve `app` until interrupted (Ctrl+C), printing the address once it listens (and, first, the
    warning, to stderr, when it is not local)."""
    warning = exposure_warning(host, port)
    if warning:
        border = "!" * 100
        print(f"{border}\n{warning}\n{border}", file=sys.stderr, flush=True)
    server = AnnouncingServer(uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False), say)
    try:
        server.run()
    except KeyboardInterrupt:            # Ctrl+C: uvicorn has shut down; raised again for the caller, who is done
        pass
    say("captionlens serve: stopped")
