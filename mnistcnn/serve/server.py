"""The server process around the app: the optional extra's check, the listening socket (bound
before anything is printed, so that a port in use is one clear line) and uvicorn."""
from __future__ import annotations

import errno
import importlib
import ipaddress
import re
import socket

from ..errors import Terminated, UsageError, install_extra, raise_signal_behind


EXTRA = install_extra("serve")


def require_web() -> None:
    """Refuse, saying what to install, when the serve extra is missing."""
    try:
        for module in ("starlette", "uvicorn"):
            importlib.import_module(module)
    except ImportError as err:
        raise_signal_behind(err)
        raise UsageError(f"mnistcnn serve needs starlette and uvicorn, which are not installed; {EXTRA}") from None


def is_loopback(host: str) -> bool:
    """True for an address that only this machine reaches (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a name other than localhost may resolve anywhere
        return False


def host_names(host: str, allowed=()) -> tuple[str, ...]:
    """The names a request's Host header may give when listening on ``host`` (any IP address may be
    given too: DNS rebinding needs a name): localhost; beyond loopback this machine's names, by which
    other machines reach it; and ``allowed`` (--allow-host: a proxy's name, another DNS name). A page
    elsewhere, under its own name pointed at this machine, is refused. An allowed name's port is
    dropped, as the Host header's is before it is compared."""
    for name in allowed:
        if not host_of(name).rstrip("."):  # would let in requests with no Host header
            raise UsageError(f"--allow-host {name!r}: names no host; give a name, such as "
                             "--allow-host proxy.example.org")
    # a URL or name:port, as a browser's address bar has them ('localhost:' or '[::1' is a name that will
    # not resolve)
    address = re.sub(r"^[a-z]+://", "", host).split("/", 1)[0] if "://" in host else host
    name, port = host_of(address), address[len(host_of(address)) + 1:]
    what = "a URL; give its host" if address != host else "a host and a port; give them apart"
    if name.strip("[]") and address == f"{name}:{port}" and re.fullmatch("[0-9]+", port):
        raise UsageError(f"--host {host}: {what}: --host {name.strip('[]')} --port {port}")
    if address != host and name.strip("[]"):
        raise UsageError(f"--host {host}: {what}: --host {name.strip('[]')}")
    names = ["localhost", *map(host_of, allowed)]
    if not is_loopback(host):
        names += [socket.gethostname(), socket.getfqdn()]
        if not is_address(host):
            names.append(host)
    return tuple(dict.fromkeys(name.lower().rstrip(".") for name in names))


def is_address(host: str) -> bool:
    """True for an IP address (IPv6 in brackets or not), False for a name."""
    try:
        ipaddress.ip_address(host[1:-1] if host.startswith("[") and host.endswith("]") else host)
    except ValueError:
        return False
    return True


def host_of(header: str) -> str:
    """A Host header (``name``, ``name:port``, ``[v6]:port``) without its port."""
    if header.startswith("["):
        return header[:header.find("]") + 1]
    # name:port; an IPv6 address without brackets (not HTTP's way, but unambiguous) has several colons
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


def host_allowed(header: str, names: tuple[str, ...]) -> bool:
    """Whether a Host header names an IP address or one of ``names`` (``host_names``)."""
    host = host_of(header)
    return is_address(host) or host.lower().rstrip(".") in names


EVERY_INTERFACE = ("0.0.0.0", "::")
# how long Ctrl-C waits for the requests under way: a client whose body stopped coming would hold it for ever
STOP_WAIT_SECONDS = 3


def url_of(host: str, port: int) -> str:
    """The page's address; on every interface, the address by this machine's name, which other
    machines can open."""
    host = socket.gethostname() if host in EVERY_INTERFACE else host
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


def network_address(host: str) -> str | None:
    """This machine's address on the network its default route leads to, when serving on every
    interface (as Jupyter prints it: a machine's name may not resolve elsewhere), else None. A UDP
    socket "connected" to a documentation address finds it and sends nothing."""
    if host not in EVERY_INTERFACE:
        return None
    family, probe = (socket.AF_INET, "192.0.2.1") if host == "0.0.0.0" else (socket.AF_INET6, "2001:db8::1")
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            sock.connect((probe, 9))
            address = sock.getsockname()[0]
    except OSError:  # no route: no network to be reached from
        return None
    return None if ipaddress.ip_address(address).is_loopback else address


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
        fix = {errno.EADDRINUSE: "choose another --port, or --port 0 for a free one",
               errno.EACCES: "choose a --port above 1023",
               errno.EADDRNOTAVAIL: f"{host} is not an address of this machine; choose another --host"}
        raise UsageError(f"cannot listen on {host}:{port} ({err.strerror}); "
                         f"{fix.get(err.errno, 'choose another --host or --port')}") from None
    return sock


def run(app, sock: socket.socket) -> None:
    """Serve ``app`` on ``sock`` with uvicorn until Ctrl-C or SIGTERM (then return, once the requests
    under way are answered or STOP_WAIT_SECONDS have passed); errors are logged, requests are not."""
    import uvicorn

    # no lifespan (the app does nothing at start or stop): a second Ctrl-C cancelled its task and
    # uvicorn printed the traceback
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off",
                                           timeout_graceful_shutdown=STOP_WAIT_SECONDS))
    try:
        server.run(sockets=[sock])
    except (KeyboardInterrupt, Terminated):  # uvicorn shut down on the signal and raises it again: the end asked for
        pass
