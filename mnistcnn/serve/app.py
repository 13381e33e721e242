"""The Starlette app: the page (three packaged files) and the JSON endpoints it calls.

Safe by default: a request's body is read up to a limit (413 past it), what is not a picture is
refused with a message the page shows, only the packaged files are served (a fixed map of names:
no path from a request reaches the file system), the Host header must be an IP address or a name
of this machine (``server.host_names``: a page elsewhere cannot reach it by DNS rebinding), and every refusal is
``{"error": "..."}`` with a 4xx status, after which the server answers as before; a failure of the server's
own is a 500 likewise, and one line on its terminal.
"""
from __future__ import annotations

import asyncio
import binascii
import email.parser
import email.policy
import json
import logging
import re
import traceback
from importlib import resources
from pathlib import Path

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.datastructures import Headers
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..errors import MnistCnnError
from ..predict import NotAPicture, PictureTooLarge
from . import inside
from .server import host_allowed, host_names, host_of

# as imported, not resolved: a traceback names the package's files by the path they were imported by, which
# may pass through a symbolic link
PACKAGE = Path(__file__).parent.parent
LOG = logging.getLogger("uvicorn.error")  # uvicorn's own lines on the terminal: "ERROR:    ..."
MAX_PICTURE_BYTES = 8 << 20
MAX_JSON_BYTES = 64 << 10
FORM_BYTES = 16 << 10  # a form's own lines around the picture it holds: a picture under the limit is not refused
# the parts of a form read in search of its file, and the headers of each: enough for any browser's or curl's form
MAX_FORM_PARTS = 16
MAX_PART_HEADERS = 4 << 10
# the page's files: name in the URL -> (file in static/, content type)
STATIC = {"app.js": ("app.js", "text/javascript; charset=utf-8"), "style.css": ("style.css", "text/css; charset=utf-8")}
HEADERS = [(b"content-security-policy", b"default-src 'self'; img-src 'self' data: blob:; object-src 'none'; "
                                        b"frame-ancestors 'none'"),
           (b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer")]


class RequestError(Exception):
    """A request the server refuses: an HTTP status and a message for the page."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class SecurityHeaders:
    """ASGI middleware adding HEADERS to every response: the page may load only its own files."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *HEADERS]
            await send(message)

        await self.app(scope, receive, send_with_headers)


class Unexpected:
    """ASGI middleware turning an error no handler expected (a bug, a run's file edited into what no
    JSON answer may carry) into a 500 ``{"error": ...}`` and one line on the terminal, where uvicorn
    printed a traceback and the page got plain text; and a request cancelled as the server stops
    (``server.STOP_WAIT_SECONDS``) into a 503."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        started = False

        async def send_noting_start(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, send_noting_start)
        except asyncio.CancelledError:  # by uvicorn, a while after Ctrl-C: the request ends, quietly
            if not started:
                await JSONResponse({"error": "the server is stopping (Ctrl-C on its terminal)"},
                                   status_code=503)(scope, receive, send)
        except Exception as err:
            request = f"{scope.get('method', '')} {scope.get('path', '')}"
            # the line of mnistcnn's that it went wrong under, rather than one deep in json or numpy (the
            # traceback starts here, so there is one)
            ours = [frame for frame in traceback.extract_tb(err.__traceback__)
                    if Path(frame.filename).is_relative_to(PACKAGE)][-1]
            LOG.error("%s failed: %s: %s (%s:%d)", request, type(err).__name__, shown_name(str(err), 300),
                      Path(ours.filename).relative_to(PACKAGE.parent), ours.lineno)
            if not started:
                error = f"the server failed on {request}; the terminal running mnistcnn serve says why"
                await JSONResponse({"error": error}, status_code=500)(scope, receive, send)


class HostCheck:
    """ASGI middleware refusing, with 400, a request whose Host header is neither an IP address nor
    one of ``names`` (``server.host_names``)."""

    def __init__(self, app, names: tuple[str, ...]):
        self.app, self.names = app, names

    async def __call__(self, scope, receive, send):
        host = Headers(scope=scope).get("host", "") if scope["type"] == "http" else None
        if host is not None and not host_allowed(host, self.names):
            shown = shown_name(host_of(host))
            if shown:
                error = (f"this server does not answer requests addressed to {shown}; open it by this machine's "
                         f"name or address, or serve with --allow-host {shown}")
            elif host:  # "[::1" or ":8000"
                error = f"the Host header {shown_name(host)} names no host; send the name or address the request " \
                        "is addressed to"
            else:
                error = "the request has no Host header; send the name or address it is addressed to"
            await JSONResponse({"error": error}, status_code=400)(scope, receive, send)
            return
        await self.app(scope, receive, send)


def too_large(what: str, limit: int) -> RequestError:
    """413 for ``what`` (the request, the picture, a file by its name), over ``limit`` bytes."""
    return RequestError(413, f"{what} is larger than {limit >> 20 or limit >> 10} "
                             f"{'MB' if limit >> 20 else 'kB'}, the limit; send a smaller one")


async def read_body(request: Request, limit: int, what: str, wrapping: int = 0) -> bytes:
    """The request's body, refused with 413 as soon as it is over ``limit`` bytes (declared or sent),
    and ``wrapping`` more: what a form adds around the ``what`` it holds."""
    refused = too_large(what, limit)
    declared = request.headers.get("content-length", "0")
    if not declared.isdigit():
        raise RequestError(400, "the Content-Length header is not a number")
    if int(declared) > limit + wrapping:
        raise refused
    chunks, size = [], 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit + wrapping:
                raise refused
            chunks.append(chunk)
    except ClientDisconnect:  # a tab closed mid-upload: a refusal that reaches no one, not a server error
        raise RequestError(400, f"the connection closed before {what} was sent whole; send it again") from None
    return b"".join(chunks)


async def read_fields(request: Request, example: str) -> dict:
    """A JSON object from the request's body; ``example`` shows the endpoint's fields."""
    body = await read_body(request, MAX_JSON_BYTES, "the request")
    try:
        fields = json.loads(body)
    except ValueError:
        raise RequestError(400, f"the request's body is not JSON; send an object such as {example}") from None
    except RecursionError:
        raise RequestError(400, f"the request's JSON is nested too deeply; send an object such as {example}") from None
    if not isinstance(fields, dict):
        raise RequestError(400, "the request's body must be a JSON object")
    return fields


def refused(fields: dict, key: str, wanted: str) -> RequestError:
    """The 400 for ``fields[key]``, which is not ``wanted`` (words after 'give'), or is missing."""
    if key not in fields:
        return RequestError(400, f"{key}: missing; give {wanted}")
    return RequestError(400, f"{key}: give {wanted}, not {shown_value(fields[key])}")


def whole_number(fields: dict, key: str, stop: int) -> int:
    """``fields[key]``, which must be a whole number from 0 to ``stop`` - 1."""
    value = fields.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < stop:
        raise refused(fields, key, f"a whole number from 0 to {stop - 1}")
    return value


def query_fields(request: Request) -> dict:
    """The query's parameters, up to nine ASCII digits as numbers (``whole_number`` checks them;
    other text, such as a superscript or a number a thousand digits long, it refuses)."""
    return {key: int(value) if re.fullmatch("[0-9]{1,9}", value) else value
            for key, value in request.query_params.items()}


def image_field(fields: dict):
    text = fields.get("image")
    if not isinstance(text, str):
        raise refused(fields, "image", "the base64 text of a 28x28 image, as /api/predict returns it")
    try:
        return inside.decode_image(text)
    except binascii.Error:
        raise RequestError(400, "image: not base64 text; send the image as /api/predict returns it") from None
    except ValueError as err:
        raise RequestError(400, f"image: not a 28x28 image as /api/predict returns it ({err})") from None


def conv_layer(served: inside.Served, fields: dict) -> int:
    """``fields["layer"]``, which must be the index of a conv layer."""
    convs = ", ".join(str(i) for i, layer in enumerate(served.model.layers) if layer.type_name == "conv2d")
    index = fields.get("layer")
    if isinstance(index, bool) or not isinstance(index, int):
        raise refused(fields, "layer", f"a conv layer's index ({convs})")
    if not 0 <= index < len(served.model.layers) or served.model.layers[index].type_name != "conv2d":
        raise RequestError(400, f"layer {shown_value(index)} is not a conv layer; the conv layers are {convs}")
    return index


async def compute(request: Request, function, *args) -> JSONResponse:
    """``function(served, *args)`` on the served model's worker thread (``inside.Served``), as JSON."""
    served = request.app.state.served
    return JSONResponse(await asyncio.wrap_future(served.worker.submit(function, served, *args)))


async def index(request):
    return Response(request.app.state.page["index.html"], media_type="text/html; charset=utf-8")


async def static(request):
    name = request.path_params["name"]
    if name not in STATIC:
        raise HTTPException(404)
    return Response(request.app.state.page[name], media_type=STATIC[name][1])


async def model(request):
    """The model as ``inside.model_summary`` tells it, and the largest picture the page may send."""
    return JSONResponse({**inside.model_summary(request.app.state.served), "max_picture_bytes": MAX_PICTURE_BYTES})


async def predict(request):
    """A picture (the request's body, or the first file of a form: ``curl -F picture=@7.png``) ->
    predict's answer and every layer's activations.

    The bytes decide whether they are a picture (``read_picture``, 415 if not), not the declared
    type: ``curl --data-binary @7.png`` declares a PNG a url-encoded form, and some clients none."""
    header = request.headers.get("content-type", "")
    form = header.split(";")[0].strip().lower() == "multipart/form-data"
    data, name = await read_body(request, MAX_PICTURE_BYTES, "the picture", FORM_BYTES if form else 0), "upload"
    if form:
        data, name = first_file(header, data)
        if len(data) > MAX_PICTURE_BYTES:
            raise too_large(f"{name}:", MAX_PICTURE_BYTES)
    if not data:
        raise RequestError(400, "the request has no picture; draw a digit or choose a PNG or JPEG")
    return await compute(request, lambda served: inside.predict_picture(served, *inside.read_picture(data, name)))


def first_file(content_type: str, body: bytes) -> tuple[bytes, str]:
    """The first file of a multipart form, or b"" when it has none, and its name as messages show it
    (``shown_name``: text only, never a path).

    Python's email parser reads the headers alone, of MAX_FORM_PARTS parts at most, each's at most
    MAX_PART_HEADERS long: on a whole form its time and memory grew faster than the form (a name's
    encoded words), and it split a file's content into lines."""
    boundary = headers_of(b"Content-Type: " + content_type.encode("latin-1")).get_boundary()
    if not boundary:
        raise RequestError(400, "the form cannot be read (no boundary between its parts); send the picture as "
                                "the request's body, or as a form's file")
    # each part follows a line "--boundary" (the first may open the body), up to the next such line
    for count, part in enumerate((b"\r\n" + body).split(b"\r\n--" + boundary.encode("latin-1"))[1:]):
        if part.startswith(b"--"):  # "--boundary--": the form's end
            break
        if count == MAX_FORM_PARTS:
            raise RequestError(400, f"the form's file is not among its first {MAX_FORM_PARTS} parts; send the "
                                    "picture as its first file, or as the request's body")
        head, _, content = part.partition(b"\r\n\r\n")
        if len(head) > MAX_PART_HEADERS:
            raise RequestError(400, f"a part of the form has over {MAX_PART_HEADERS >> 10} kB of headers; send the "
                                    "picture as the request's body, or as a form's file with a shorter name")
        name = headers_of(head.partition(b"\r\n")[2]).get_filename()  # the headers, after the boundary's line
        if name is not None:
            return content, shown_name(name) or "upload"
    return b"", "upload"


def headers_of(lines: bytes):
    """Header lines (CRLF between them) as an email message, by the rules of HTTP."""
    return email.parser.BytesHeaderParser(policy=email.policy.HTTP).parsebytes(lines + b"\r\n\r\n")


def shown_value(value) -> str:
    """A request's JSON value as a refusal quotes it: cut short, as it may be of any length."""
    return shown_name(json.dumps(value), 40)


def shown_name(filename: str, longest: int = 80) -> str:
    """A name as the client sent it (a file's, a Host), as text for a message: what does not print (a
    newline, a terminal's escape) as Python writes it (\\n, \\x1b), cut to ``longest`` characters."""
    text = "".join(c if c.isprintable() else ascii(c)[1:-1] for c in filename)
    return text if len(text) <= longest else text[:longest - 3] + "..."


async def explain(request):
    """The arithmetic behind one value of a conv layer, for a 28x28 image as predict returned it."""
    fields = await read_fields(request, '{"image": "...", "layer": 0, "row": 5, "col": 7, "channel": 2}')
    served = request.app.state.served
    index = conv_layer(served, fields)
    height, width, channels = served.model.layers[index].output_shape
    where = [whole_number(fields, key, stop) for key, stop in (("row", height), ("col", width),
                                                                ("channel", channels))]
    image = image_field(fields)
    return await compute(request, lambda s: inside.conv_arithmetic(s.model, inside.model_input(s, image), index,
                                                                   *where))


async def gradients(request):
    fields = await read_fields(request, '{"image": "...", "class": 3}')
    target = whole_number(fields, "class", len(request.app.state.served.classes))
    return await compute(request, inside.gradients, image_field(fields), target)


async def weights(request):
    fields, served = query_fields(request), request.app.state.served
    index = conv_layer(served, fields)
    channel = whole_number(fields, "channel", served.model.layers[index].filters)
    return await compute(request, lambda s: inside.filter_weights(s.model, index, channel))


async def run(request):
    return await compute(request, inside.run_report)


async def cell(request):
    fields, count = query_fields(request), len(request.app.state.served.classes)
    return await compute(request, inside.cell_images, whole_number(fields, "true", count),
                         whole_number(fields, "predicted", count))


ROUTES = [Route("/", index), Route("/static/{name}", static), Route("/api/model", model),
          Route("/api/predict", predict, methods=["POST"]), Route("/api/explain", explain, methods=["POST"]),
          Route("/api/gradients", gradients, methods=["POST"]), Route("/api/filter", weights),
          Route("/api/run", run), Route("/api/run/cell", cell)]


def create_app(served: inside.Served, names: tuple[str, ...] = host_names("127.0.0.1")) -> Starlette:
    """The app serving ``served`` (``inside.open_model``); ``names``: the names a request's Host
    header may give (``server.host_names``). The page's files are read once, here."""
    app = Starlette(routes=ROUTES, exception_handlers=ERROR_HANDLERS,
                    middleware=[Middleware(SecurityHeaders), Middleware(Unexpected),
                                Middleware(HostCheck, names=names)])
    app.state.served = served
    app.state.page = {name: resources.files(__package__).joinpath("static", file).read_bytes()
                      for name, (file, _) in {**STATIC, "index.html": ("index.html", "")}.items()}
    return app


def _refused(request, err: RequestError):
    return JSONResponse({"error": str(err)}, status_code=err.status)


def _library_error(request, err: MnistCnnError):
    status = 413 if isinstance(err, PictureTooLarge) else 415 if isinstance(err, NotAPicture) else 400
    return JSONResponse({"error": str(err)}, status_code=status)


def _http_error(request, err: HTTPException):
    message = f"no such page: {request.url.path}" if err.status_code == 404 else err.detail
    if err.status_code == 405 and err.headers and "allow" in {key.lower() for key in err.headers}:
        allowed = next(value for key, value in err.headers.items() if key.lower() == "allow")
        message = f"{request.url.path} takes {allowed}, not {request.method}"
    return JSONResponse({"error": message}, status_code=err.status_code, headers=err.headers)


ERROR_HANDLERS = {RequestError: _refused, MnistCnnError: _library_error, HTTPException: _http_error}
