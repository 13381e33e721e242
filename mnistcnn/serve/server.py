"""The server process around the app: the optional extra's check, the listening socket (bound
before anything is printed, so that a port in use is one clear line) and uvicorn."""
from __future__ import annotations

import errno
import importlib
import ipaddress
import socket

from ..errors import UsageError, install_extra

LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")  # this machine, as a browser on it names it

EXTRA = install_extra("serve")


def require_web() -> None:
    """Refuse, saying what to install, when the serve extra is missing."""
    try:
        for module in ("starlette", "uvicorn"):
            importlib.import_module(module)
    except ImportError:
        raise UsageError(f"mnistcnn serve needs starlette and uvicorn, which are not installed; {EXTRA}") from None


def is_loopback(host: str) -> bool:
    """True for an address that only this machine reaches (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a name other than localhost may resolve anywhere
        return False


def allowed_hosts(host: str) -> tuple[str, ...]:
    """The Host headers to answer when listening on ``host``: this machine's names on loopback (a
    page elsewhere cannot then reach the server by DNS rebinding), any beyond it."""
    if not is_loopback(host):
        return ("*",)
    return tuple(dict.fromkeys((*LOOPBACK_NAMES, f"[{host}]" if ":" in host else host)))


EVERY_INTERFACE = ("0.0.0.0", "::")


def url_of(host: str, port: int) -> str:
    """The page's address; on every interface, the address by this machine's name, which other
    machines can open."""
    host = socket.gethostname() if host in EVERY_INTERFACE else host
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


def browser_url(host: str, port: int) -> str:
    """The address for a browser on this machine: by loopback when serving on every interface."""
    return url_of("127.0.0.1" if host in EVERY_INTERFACE else host, port)


def listening_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host``:``port`` and listening: a browser may connect at once, and its
    request waits in the backlog until uvicorn serves it."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror:
        raise UsageError(f"--host {host}: not an address or a name this machine can resolve; "
                         "the default 127.0.0.1 serves this machine only") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        sock.listen(128)
    except OSError as err:
        sock.close()
        fix = {errno.EADDRINUSE: "choose another --port", errno.EACCES: "choose a --port above 1023",
               errno.EADDRNOTAVAIL: f"{host} is not an address of this machine; choose another --host"}
        raise UsageError(f"cannot listen on {host}:{port} ({err.strerror}); "
                         f"{fix.get(err.errno, 'choose another --host or --port')}") from None
    return sock


def run(app, sock: socket.socket) -> None:
    """Serve ``app`` on ``sock`` with uvicorn until Ctrl-C (then return) or SIGTERM; errors are
    logged, requests are not."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:  # uvicorn has shut down on Ctrl-C and raises it again: the end asked for
        pass
