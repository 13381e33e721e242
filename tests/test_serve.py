"""mnistcnn serve: the endpoints against mnistcnn predict and the engine (Starlette's TestClient),
refusals after which the server still answers, the command, and the page itself in a real
headless Chromium against a real server.

The browser test serves the shared small run; MNISTCNN_TEST_SERVE_RUN=RUN serves another (the
README's screenshot is this test's, with a configs/lenet.yaml run). Screenshots go to
MNISTCNN_TEST_ARTEFACTS when set.
"""
from __future__ import annotations

import base64
import io
import json
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
import warnings
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pytest

from mnistcnn.errors import UsageError, install_extra
from PIL import Image, ImageDraw

pytest.importorskip("starlette", reason="the serve extra: pip install 'mnistcnn[serve]'")
pytest.importorskip("httpx", reason="Starlette's TestClient needs httpx: pip install 'mnistcnn[dev]'")

with warnings.catch_warnings():  # Starlette asks for httpx2 in place of httpx; its TestClient works with either
    warnings.filterwarnings("ignore", "Using `httpx` with `starlette.testclient`")
    from starlette.testclient import TestClient  # noqa: E402

from mnistcnn.colour_scale import colour_scale  # noqa: E402
from mnistcnn.export import FLOAT32_RTOL  # noqa: E402
from mnistcnn.evaluation import eval_target  # noqa: E402
from mnistcnn.predict import (BLANK, DOUBT_ADVICE, DRAWN_ADVICE, LOW_CONFIDENCE, MIN_CONFIDENCE,  # noqa: E402
                              NO_SINGLE_DIGIT, classify, prepare, read_grey)
from mnistcnn.serve.app import (MAX_FORM_PARTS, MAX_JSON_BYTES, MAX_PART_HEADERS, MAX_PICTURE_BYTES,  # noqa: E402
                                create_app)
from mnistcnn.serve.inside import encode_map, open_model, trace, upload_formats  # noqa: E402
from mnistcnn.serve.server import host_names, network_address, url_of  # noqa: E402
from mnistcnn.trainer import load_model  # noqa: E402

@pytest.fixture(scope="module")
def served(trained_run):
    return open_model(trained_run)


@pytest.fixture(scope="module")
def client(served):
    return TestClient(create_app(served), base_url="http://127.0.0.1")


def picture_bytes(image: np.ndarray, kind: str) -> bytes:
    """``image`` as a file of Pillow's format ``kind`` (PNG, JPEG, ...)."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, kind)
    return buffer.getvalue()


def png_bytes(image: np.ndarray) -> bytes:
    return picture_bytes(image, "PNG")


def post_picture(client, data: bytes, kind="image/png"):
    return client.post("/api/predict", content=data, headers={"content-type": kind})


def scribble() -> np.ndarray:
    """Two separate zigzags on black: no single digit."""
    picture = Image.new("L", (280, 280), 0)
    draw = ImageDraw.Draw(picture)
    for left in (20, 170):
        draw.line([(left, 40), (left + 80, 90), (left, 140), (left + 80, 190), (left, 240)], fill=255, width=18)
    return np.asarray(picture)


@pytest.fixture(scope="module")
def pictures(served, tmp_path_factory):
    """PNG files: MNIST test digits as they are, two as dark ink on a larger light picture (the
    photo path of predict's preprocessing), a blank canvas and a scribble."""
    folder = tmp_path_factory.mktemp("pictures")
    images = {f"test{i}": served.test_x[i, :, :, 0] for i in range(4)}
    for i in (4, 5):
        images[f"paper{i}"] = 255 - np.asarray(Image.fromarray(served.test_x[i, :, :, 0]).resize((140, 140)))
    images["blank"] = np.zeros((280, 280), np.uint8)
    images["scribble"] = scribble()
    for name, image in images.items():
        (folder / f"{name}.png").write_bytes(png_bytes(image))
    return sorted(folder.glob("*.png"))


def test_predictions_equal_mnistcnn_predicts(client, trained_run, pictures, cli, tmp_path, decided_ranks):
    result = cli("predict", trained_run, *pictures, "--json", "--top", "10", "--save-inputs", tmp_path)
    assert result.exit_code == 0, result.output
    expected = {Path(row["path"]).stem: row for row in json.loads(result.output)["predictions"]}
    for path in pictures:
        answer = post_picture(client, path.read_bytes())
        assert answer.status_code == 200, answer.text
        served, want = answer.json(), expected[path.stem]
        seen = np.frombuffer(base64.b64decode(served["image"]), np.uint8).reshape(28, 28)
        np.testing.assert_array_equal(seen, np.asarray(Image.open(tmp_path / f"{path.stem}.png")), err_msg=path.stem)
        # the fast plan against the plain loop: the same classes where float32 rounding cannot swap them
        probabilities = [c["probability"] for c in want["top"]]
        for rank in decided_ranks(probabilities, FLOAT32_RTOL):
            if rank < 3:
                assert served["top"][rank]["class"] == want["top"][rank]["class"], (path.stem, rank)
        if 0 in decided_ranks(probabilities, FLOAT32_RTOL):
            assert served["prediction"] == want["prediction"], path.stem
        if not probabilities or abs(probabilities[0] - MIN_CONFIDENCE) > FLOAT32_RTOL:  # no rounding swaps the doubt
            assert served["doubt"] == want["doubt"], path.stem
        for choice in want["top"]:  # the fast plan against the plain loop: float32 rounding apart
            index = int(choice["class"])
            assert abs(served["probabilities"][index] - choice["probability"]) <= FLOAT32_RTOL, path.stem


def test_a_blank_canvas_and_a_scribble_are_flagged_as_predict_flags_them(client, pictures):
    answers = {path.stem: post_picture(client, path.read_bytes()).json() for path in pictures}
    assert answers["blank"]["doubt"] == "blank" and answers["blank"]["prediction"] is None
    assert answers["blank"]["probabilities"] == [None] * 10
    assert answers["scribble"]["doubt"] == "no single digit"
    assert all(answers[f"test{i}"]["doubt"] is None for i in range(4))


def levels(maps: dict) -> np.ndarray:
    """A layer's maps as the page gets them -> its codes 0 to 255, channels first, flat."""
    return np.frombuffer(base64.b64decode(maps["data"]), np.uint8)


def decoded(maps: dict) -> np.ndarray:
    """A layer's maps as the page gets them -> values in the layer's own layout."""
    shape = maps["shape"]
    values = maps["low"] + levels(maps).astype(np.float64) / 255 * (maps["high"] - maps["low"])
    return np.moveaxis(values.reshape(shape[-1], *shape[:-1]), 0, -1) if len(shape) == 3 else values


def test_activations_have_each_layers_shape_and_the_engines_values(client, served):
    answer = post_picture(client, png_bytes(served.test_x[3, :, :, 0])).json()
    layers = served.model.layers
    assert len(answer["layers"]) == len(layers)
    x = served.preprocess(served.test_x[3:4])
    out = x
    for layer, shown in zip(layers, answer["layers"]):
        out = layer.forward(out)  # the engine's own evaluation forward, layer by layer
        assert shown["maps"]["shape"] == list(layer.output_shape), layer.name
        step = (shown["maps"]["high"] - shown["maps"]["low"]) / 255
        assert np.max(np.abs(decoded(shown["maps"]) - out[0])) <= step / 2 + 1e-5, layer.name
        assert shown["stats"]["max"] == pytest.approx(float(out.max()), rel=1e-6, abs=1e-6), layer.name
        assert ("dead_channel_fraction" in shown["stats"]) == (out.ndim == 4)


def test_a_layer_with_both_signs_is_shown_about_0_and_a_relus_output_from_its_least(client, served):
    # every layer was shown from its least to its largest value on a one-sided colour map: a conv's
    # negative responses, which its relu zeros, looked like weak positive ones (inspect-layer draws
    # them on a diverging map centred on 0)
    answer = post_picture(client, png_bytes(served.test_x[3, :, :, 0])).json()
    outputs, _ = trace(served.model, served.preprocess(served.test_x[3:4]))
    for output, shown in zip(outputs, answer["layers"]):
        assert shown["maps"]["signed"] == colour_scale(output[0]).signed
    kinds = [layer.type_name for layer in served.model.layers]
    conv, relu = kinds.index("conv2d"), kinds.index("relu")
    assert relu == conv + 1
    maps = answer["layers"][conv]["maps"]
    assert maps["signed"] and maps["low"] == -maps["high"] < 0
    codes = np.moveaxis(levels(maps).reshape(maps["shape"][-1], *maps["shape"][:-1]), 0, -1)
    value, half_step = outputs[conv][0], maps["high"] / 255 + 1e-6
    assert (codes[value < -half_step] <= 127).all() and (codes[value > half_step] >= 128).all()
    assert (value < -half_step).any() and (value > half_step).any()
    maps = answer["layers"][relu]["maps"]
    assert not maps["signed"] and maps["low"] == 0 < maps["high"]


def test_a_map_s_0_is_the_middle_code_when_signed_and_gradients_are_always_signed():
    shown = encode_map(np.array([-2.0, 0.0, 1.0]))
    assert shown["signed"] and (shown["low"], shown["high"]) == (-2.0, 2.0)
    assert list(levels(shown)) in ([0, 127, 191], [0, 128, 191])
    shown = encode_map(np.array([0.0, 1.0, 3.0]))
    assert not shown["signed"] and (shown["low"], shown["high"]) == (0.0, 3.0) and list(levels(shown)) == [0, 85, 255]
    shown = encode_map(np.array([0.5, 1.0]), signed=True)  # a gradient's sign is its meaning
    assert shown["signed"] and shown["low"] == -1.0 and list(levels(shown)) == [191, 255]


def test_a_clicked_values_products_sum_plus_bias_to_the_engines_value(client, served):
    image = served.test_x[7, :, :, 0]
    encoded = base64.b64encode(image.tobytes()).decode()
    rng = np.random.default_rng(0)
    x = served.preprocess(served.test_x[7:8])
    convs = [i for i, layer in enumerate(served.model.layers) if layer.type_name == "conv2d"]
    for index in convs:
        expected = trace(served.model, x)[0][index]
        h, w, c = served.model.layers[index].output_shape
        for row, col, channel in [(0, 0, 0), (h - 1, w - 1, c - 1)] + [tuple(rng.integers(0, (h, w, c)))
                                                                         for _ in range(3)]:
            answer = client.post("/api/explain", json={"image": encoded, "layer": index, "row": int(row),
                                                       "col": int(col), "channel": int(channel)})
            assert answer.status_code == 200, answer.text
            arithmetic = answer.json()
            products = np.asarray(arithmetic["products"])
            assert products.shape == (served.model.layers[index].input_shape[-1], 5 if index == 0 else 3,
                                      5 if index == 0 else 3)
            np.testing.assert_allclose(products, np.asarray(arithmetic["window"]) * np.asarray(arithmetic["filter"]))
            value = float(expected[0, row, col, channel])
            assert arithmetic["value"] == pytest.approx(value, rel=1e-6, abs=1e-7)
            assert abs(products.sum() + arithmetic["bias"] - value) <= FLOAT32_RTOL * max(1.0, abs(value))
            if row == 0 and col == 0:  # the window starts in the padding
                assert arithmetic["top"] < 0 and not np.asarray(arithmetic["window"])[:, 0, :].any()


def test_the_saliency_map_equals_finite_differences_of_a_float64_model(client, served, trained_run):
    """The engine's float32 backward against centred differences of the same weights in float64,
    within FLOAT32_RTOL of the map's largest value. The digit carries a little noise so that no
    max-pool window ties exactly (on a blank background every window would: there a centred
    difference averages the two sides, where the backward takes the first maximum)."""
    rng = np.random.default_rng(1)
    image = np.clip(served.test_x[11, :, :, 0].astype(int) + rng.integers(0, 4, (28, 28)), 0, 255).astype(np.uint8)
    target = 6
    answer = client.post("/api/gradients", json={"image": base64.b64encode(image.tobytes()).decode(), "class": target})
    assert answer.status_code == 200, answer.text
    gradients = answer.json()
    saliency = np.asarray(gradients["saliency"])
    assert saliency.shape == (28, 28)
    model64, _, preprocess = load_model(served.checkpoint, np.float64)
    x = preprocess(image[None, :, :, None]).astype(np.float64)
    largest = np.abs(saliency).max()
    assert largest > 0
    pixels = list(zip(*np.unravel_index(np.argsort(-np.abs(saliency), axis=None)[:4], saliency.shape)))
    pixels += [tuple(rng.integers(0, 28, 2)) for _ in range(4)]
    eps = 1e-6
    for row, col in pixels:
        up, down = x.copy(), x.copy()
        up[0, row, col, 0] += eps
        down[0, row, col, 0] -= eps
        estimate = (model64.forward(up)[0, target] - model64.forward(down)[0, target]) / (2 * eps)
        assert abs(estimate - saliency[row, col]) <= FLOAT32_RTOL * largest, (row, col)
    last = gradients["layers"][-1]["maps"]  # the logits' gradient: the class's one-hot vector, to a grey level
    np.testing.assert_allclose(decoded(last), np.eye(10)[target], atol=(last["high"] - last["low"]) / 255)
    assert [layer["maps"]["shape"] for layer in gradients["layers"]] == \
        [list(layer.output_shape) for layer in served.model.layers]


BAD_UPLOADS = {
    "not an image": (b"GIF89a? no, just text", "image/png", 415, "is not a picture in a format known here"),
    "empty": (b"", "image/png", 400, "no picture"),
    "form fields": (b"name=digit", "application/x-www-form-urlencoded", 415, "not a picture"),
    "text file": (b"hello", "text/plain", 415, "not a picture"),
    "huge": (b"\x89PNG" + bytes(MAX_PICTURE_BYTES), "image/png", 413, "larger than 8 MB"),
    "huge, sent by curl": (b"\x89PNG" + bytes(MAX_PICTURE_BYTES), "application/x-www-form-urlencoded", 413,
                           "larger than 8 MB"),
}


@pytest.mark.parametrize("case", BAD_UPLOADS, ids=list(BAD_UPLOADS))
def test_bad_uploads_get_a_message_and_the_server_keeps_answering(client, served, case):
    data, kind, status, words = BAD_UPLOADS[case]
    answer = post_picture(client, data, kind)
    assert answer.status_code == status and words in answer.json()["error"], answer.text
    good = post_picture(client, png_bytes(served.test_x[0, :, :, 0]))
    assert good.status_code == 200 and good.json()["prediction"] is not None


@pytest.mark.parametrize("declared", [None, "application/x-www-form-urlencoded", "text/plain"])
def test_a_picture_is_known_by_its_bytes_not_its_declared_type(client, served, declared):
    # `curl --data-binary @7.png` declares a url-encoded form, requests.post(url, data=...) nothing:
    # both were refused with 415 as "not a picture"
    headers = {} if declared is None else {"content-type": declared}
    digit = served.test_x[3, :, :, 0]
    for kind in ("PNG", "JPEG", "GIF", "WEBP", "BMP", "TIFF"):
        picture = picture_bytes(digit, kind)
        answer = client.post("/api/predict", content=picture, headers=headers)
        assert answer.status_code == 200, (kind, answer.text)
        typed = post_picture(client, picture, f"image/{kind.lower()}").json()
        assert answer.json()["image"] == typed["image"] and answer.json()["top"] == typed["top"], kind
    wide = client.post("/api/predict", content=png_bytes(np.zeros((6000, 6000), np.uint8)), headers=headers)
    assert wide.status_code == 413 and "million pixels" in wide.json()["error"]  # the pixel limit still holds
    text = client.post("/api/predict", content=b"picture=7.png", headers=headers)
    assert text.status_code == 415 and "not a picture" in text.json()["error"], text.text
    # a format predict does not take by name meets no parser: Pillow would read this PCX
    assert Image.open(io.BytesIO(picture_bytes(digit, "PCX"))).format == "PCX"
    other = client.post("/api/predict", content=picture_bytes(digit, "PCX"), headers=headers)
    assert other.status_code == 415 and "not a picture" in other.json()["error"], other.text


def test_json_requests_are_read_whatever_type_they_declare(client, served):
    image = post_picture(client, png_bytes(served.test_x[3, :, :, 0])).json()["image"]
    for url, fields in (("/api/explain", {"image": image, "layer": 0, "row": 5, "col": 7, "channel": 2}),
                        ("/api/gradients", {"image": image, "class": 3})):
        for headers in ({}, {"content-type": "application/x-www-form-urlencoded"}):  # curl -d, requests' data=
            answer = client.post(url, content=json.dumps(fields).encode(), headers=headers)
            assert answer.status_code == 200, (url, headers, answer.text)


def test_pictures_are_read_one_at_a_time_on_one_thread(client, served, monkeypatch):
    # reading a picture of 25 million pixels (a small PNG) takes hundreds of MB; the pictures of requests at
    # once were read at once, each in a thread of its own, and thirty such took the server to gigabytes; read
    # one at a time, in threads taken in turn, they still did: each thread's malloc arena kept its share
    from concurrent.futures import ThreadPoolExecutor
    import threading
    from mnistcnn.serve import inside

    readers, read = set(), inside.read_picture

    def reading(*args):
        readers.add(threading.get_ident())
        return read(*args)

    monkeypatch.setattr(inside, "read_picture", reading)
    picture = png_bytes(served.test_x[0, :, :, 0])
    with ThreadPoolExecutor(4) as clients:
        answers = list(clients.map(lambda _: post_picture(client, picture).status_code, range(8)))
    assert answers == [200] * 8 and len(readers) == 1


def test_pictures_too_large_or_damaged_are_refused(client, served):
    wide = png_bytes(np.zeros((6000, 6000), np.uint8))  # a few kB of PNG, 36 million pixels
    answer = post_picture(client, wide)
    assert answer.status_code == 413 and "million pixels" in answer.json()["error"]
    truncated = png_bytes(served.test_x[0, :, :, 0])[:60]
    answer = post_picture(client, truncated)
    assert answer.status_code == 400 and "damaged or truncated" in answer.json()["error"]

    def chunks():  # no Content-Length: the limit holds while the body streams in
        for _ in range(MAX_PICTURE_BYTES // 65536 + 2):
            yield bytes(65536)

    answer = client.post("/api/predict", content=chunks(), headers={"content-type": "image/png"})
    assert answer.status_code == 413
    assert post_picture(client, png_bytes(served.test_x[0, :, :, 0])).status_code == 200


def asgi_request(app, method: str, path: str, headers: dict, messages: list) -> list:
    """``app`` called as uvicorn calls it, the request's body as ``messages`` (``http.request`` and
    ``http.disconnect`` events) and nothing after them: what the app sent back."""
    import anyio

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "scheme": "http",
             "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
             "headers": [(key.encode(), value.encode()) for key, value in headers.items()],
             "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8000)}
    events, sent = iter(messages), []

    async def receive():
        return next(events)

    async def send(message):
        sent.append(message)

    anyio.run(app, scope, receive, send)
    return sent


@pytest.mark.parametrize("url", ["/api/gradients", "/api/predict"])
def test_a_client_gone_before_its_body_ends_is_no_error(served, url):
    # a tab closed or a curl stopped mid-upload raised ClientDisconnect out of the app: uvicorn printed
    # its traceback on the terminal that serves the page
    sent = asgi_request(create_app(served), "POST", url, {"host": "127.0.0.1", "content-length": "100"},
                        [{"type": "http.request", "body": b"{", "more_body": True}, {"type": "http.disconnect"}])
    assert [message["type"] for message in sent] in ([], ["http.response.start", "http.response.body"])


def test_a_json_request_over_its_limit_is_refused_and_the_server_answers_on(client):
    body = json.dumps({"image": "A" * MAX_JSON_BYTES, "class": 1}).encode()  # the picture's limit is far higher
    answer = client.post("/api/gradients", content=body, headers={"content-type": "application/json"})
    assert answer.status_code == 413 and "the request is larger than 64 kB" in answer.json()["error"], answer.text
    assert client.get("/api/model").status_code == 200


@pytest.mark.parametrize("url,body,words", [
    ("/api/explain", {"image": "AAAA", "layer": 0, "row": 0, "col": 0, "channel": 0}, "not a 28x28 image"),
    ("/api/explain", {"layer": 1, "row": 0, "col": 0, "channel": 0}, "not a conv layer; the conv layers are 0, 3"),
    ("/api/explain", {"layer": 0, "row": 28, "col": 0, "channel": 0}, "row: give a whole number from 0 to 27"),
    ("/api/explain", {"layer": 0, "row": 0, "col": True, "channel": 0}, "col: give a whole number"),
    ("/api/explain", [1, 2], "must be a JSON object"),
    ("/api/gradients", {"class": 10}, "class: give a whole number from 0 to 9"),
    ("/api/gradients", {"class": 1}, "image: missing; give the base64 text of a 28x28 image"),
    ("/api/gradients", "{not json", 'not JSON; send an object such as {"image": "...", "class": 3}'),
    ("/api/explain", "{not json", '"layer": 0, "row": 5, "col": 7, "channel": 2}'),
    ("/api/explain", {"layer": 0.0, "row": 0, "col": 0, "channel": 0},
     "layer: give a conv layer's index (0, 3), not 0.0"),
    ("/api/gradients", "[" * 20000 + "]" * 20000, "nested too deeply"),
    ("/api/gradients", {"image": 5, "class": 1}, "image: give the base64 text of a 28x28 image"),
    ("/api/gradients", {"image": "@@@@", "class": 1}, "image: not base64 text"),
])
def test_bad_requests_name_what_is_wrong(client, url, body, words):
    content = body.encode() if isinstance(body, str) else json.dumps(body).encode()
    answer = client.post(url, content=content, headers={"content-type": "application/json"})
    assert answer.status_code == 400 and words in answer.json()["error"], answer.text
    assert client.get("/api/model").status_code == 200


@pytest.mark.parametrize("value", ["x" * 60000, int("9" * 4000), [list(range(10000))]], ids=["text", "number", "list"])
def test_a_refused_value_is_shown_cut_short(client, value):
    # a refusal echoed the value whole: 60 kB of text, or a number of 4,000 digits, came back as the message
    for url, fields in (("/api/gradients", {"image": "", "class": value}),
                        ("/api/explain", {"image": "", "layer": value, "row": 0, "col": 0, "channel": 0}),
                        ("/api/explain", {"image": "", "layer": 0, "row": value, "col": 0, "channel": 0}),
                        ("/api/gradients", {"image": value, "class": 0})):
        answer = client.post(url, content=json.dumps(fields).encode())
        assert answer.status_code == 400 and len(answer.json()["error"]) < 200, (url, answer.text[:300])


@pytest.mark.parametrize("url,status,words", [
    ("/api/filter?layer=%C2%B2&channel=0", 400, "layer: give a conv layer's index (0, 3), not"),  # a superscript 2
    ("/api/filter?layer=" + "9" * 5000 + "&channel=0", 400, "layer: give a conv layer's index"),
    ("/api/run/cell?true=%C2%B9&predicted=9", 400, "true: give a whole number from 0 to 9"),
    ("/api/run/cell?true=4", 400, "predicted: missing; give a whole number from 0 to 9"),  # it said 'not null'
    ("/api/predict", 405, "/api/predict takes POST, not GET"),
])
def test_bad_queries_and_methods_name_what_is_wrong(client, url, status, words):
    answer = client.get(url)
    assert answer.status_code == status and words in answer.json()["error"], answer.text
    assert status != 405 or answer.headers["allow"] == "POST"


def test_only_the_packaged_files_are_served(client):
    for path in ("/static/../../etc/passwd", "/static/..%2F..%2Fetc%2Fpasswd", "/static/%2e%2e/%2e%2e/etc/passwd",
                 "/static/app.js/../../../etc/passwd", "/static/index.html", "/static/", "/etc/passwd",
                 "/static/..%5C..%5Cetc%5Cpasswd"):
        answer = client.get(path)
        assert answer.status_code == 404 and answer.json()["error"].startswith("no such page"), path
    page = client.get("/")
    assert page.status_code == 200 and '<canvas id="pad"' in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert client.get("/static/app.js").headers["content-type"].startswith("text/javascript")
    assert client.get("/", headers={"host": "attacker.example"}).status_code == 400  # DNS rebinding


@pytest.mark.parametrize("listening", ["127.0.0.1", "0.0.0.0"])
def test_requests_by_an_address_or_this_machines_names_are_answered_and_by_other_names_refused(served, listening):
    # on 0.0.0.0 any Host was answered, so a page elsewhere could reach the server by DNS rebinding
    # (a name of its own pointed at this machine); an IP address it cannot use
    client = TestClient(create_app(served, host_names(listening, ["proxy.example"])), base_url="http://127.0.0.1")
    machine = [] if listening == "127.0.0.1" else [socket.gethostname(), socket.getfqdn().upper() + "."]
    for host in ("localhost:8000", "127.0.0.1", "10.1.2.3:8000", "[::1]:8000", "[fe80::1]", "proxy.example:8080",
                 *machine):
        assert client.get("/api/model", headers={"host": host}).status_code == 200, host
    for host in ("attacker.example", "attacker.example:8000", "localhost.attacker.example", ""):
        refused = client.get("/api/model", headers={"host": host})
        assert refused.status_code == 400, (host, refused.text)
        assert (f"--allow-host {host.split(':')[0]}" if host else "no Host header") in refused.json()["error"], \
            refused.text
    if listening == "127.0.0.1" and socket.gethostname() != "localhost":  # loopback: no other machine's name
        assert client.get("/api/model", headers={"host": socket.gethostname()}).status_code == 400


def test_an_allowed_name_is_compared_without_its_port_and_an_empty_one_refused(served, cli, trained_run):
    # --allow-host proxy.example:8080 never matched (the Host header is compared without its port), and
    # --allow-host '' let in requests with no Host header at all
    client = TestClient(create_app(served, host_names("127.0.0.1", ["proxy.example:8080"])),
                        base_url="http://127.0.0.1")
    assert client.get("/api/model", headers={"host": "proxy.example:8080"}).status_code == 200
    assert client.get("/api/model", headers={"host": ""}).status_code == 400
    result = cli("serve", trained_run, "--port", "0", "--allow-host", "")
    assert result.exit_code == 2 and result.stdout == "", result.output
    assert result.stderr == ("error: --allow-host '': names no host; give a name, such as "
                             "--allow-host proxy.example.org\n")


@pytest.mark.parametrize("host", ["[::1", ":8000"])
def test_a_host_header_that_names_no_host_is_refused_saying_so(client, host):
    # refused as "addressed to ; open it by ... or serve with --allow-host ": an empty name, an option without one
    refused = client.get("/api/model", headers={"host": host})
    assert refused.status_code == 400 and refused.json()["error"] == (
        f"the Host header {host} names no host; send the name or address the request is addressed to"), refused.text


def test_the_run_tab_is_evals_report(client, trained_run):
    run = client.get("/api/run").json()
    report, _ = eval_target(trained_run)
    assert run["confusion"] == report["confusion"]
    assert [m["index"] for m in run["misclassified"]] == [m["index"] for m in report["misclassified"]]
    assert run["accuracy"] == pytest.approx(report["accuracy"])
    summary = json.loads((trained_run / "summary.json").read_text())
    assert run["summary"]["test_acc"] == summary["test_acc"]
    # in words, as train's results table says them: percentages, not summary.json's fractions
    assert ["test accuracy (best checkpoint)", f"{summary['test_acc']:.2%}"] in run["results"]
    assert "name: small" in run["config"] and len(run["history"]) == 2
    true, predicted = next((t, p) for t in range(10) for p in range(10) if t != p and report["confusion"][t][p])
    cell = client.get(f"/api/run/cell?true={true}&predicted={predicted}").json()
    assert cell["count"] == report["confusion"][true][predicted] == len(cell["images"])
    assert client.get("/api/run/cell?true=3&predicted=x").status_code == 400


def test_a_failure_inside_the_server_is_one_line_on_the_terminal_and_a_json_error(run, caplog):
    # a summary.json edited to hold NaN (JSON that Python reads but no JSON answer may carry) failed the run
    # tab's request: the page got a plain-text "Internal Server Error" and the terminal a traceback
    client = TestClient(create_app(open_model(run)), base_url="http://127.0.0.1")
    summary = json.loads((run / "summary.json").read_text())
    (run / "summary.json").write_text(json.dumps({**summary, "test_acc": float("nan")}))
    with caplog.at_level("INFO", logger="uvicorn.error"):
        answer = client.get("/api/run")
    assert answer.status_code == 500 and answer.headers["content-type"] == "application/json", answer.text
    assert answer.json() == {"error": "the server failed on GET /api/run; the terminal running mnistcnn serve "
                                      "says why"}
    assert answer.headers["x-content-type-options"] == "nosniff"
    (record,) = caplog.records
    assert record.exc_info is None and "\n" not in record.getMessage(), record.getMessage()
    assert record.getMessage().startswith("GET /api/run failed: ValueError: Out of range float values"), \
        record.getMessage()
    assert "(mnistcnn/serve/app.py:" in record.getMessage()  # where in mnistcnn, not deep in json
    assert client.get("/api/model").status_code == 200


FAILED_THROUGH_A_LINK = """import json, sys, warnings
sys.path.insert(0, sys.argv[1])
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient
from mnistcnn.serve.app import create_app
from mnistcnn.serve.inside import open_model
client = TestClient(create_app(open_model(sys.argv[2])), base_url="http://127.0.0.1", raise_server_exceptions=False)
answer = client.get("/api/run")
print(answer.status_code, answer.headers["content-type"], answer.text)
"""


def test_a_failure_inside_a_server_imported_through_a_symlink_is_still_a_json_error(run, tmp_path):
    # mnistcnn imported by a path through a symbolic link (macOS's /tmp and /var, a home folder that is a link):
    # the middleware looked for its frames under the package's resolved path, found none and failed itself, and
    # the page got a plain-text "Internal Server Error" and the terminal a traceback
    import mnistcnn

    linked = tmp_path / "linked"
    linked.symlink_to(Path(mnistcnn.__file__).parent.parent, target_is_directory=True)
    summary = json.loads((run / "summary.json").read_text())
    (run / "summary.json").write_text(json.dumps({**summary, "test_acc": float("nan")}))
    served = subprocess.run([sys.executable, "-c", FAILED_THROUGH_A_LINK, str(linked), str(run)],
                            capture_output=True, text=True)
    assert served.stdout == ('500 application/json {"error":"the server failed on GET /api/run; the terminal '
                             'running mnistcnn serve says why"}\n'), served.stdout + served.stderr
    assert "Traceback" not in served.stderr and "(mnistcnn/serve/app.py:" in served.stderr, served.stderr


# -- the command --------------------------------------------------------------------------------
@pytest.fixture
def start_server(mnistcnn_command):
    """``start_server(target, *options)``: ``mnistcnn serve --port 0`` in its own process, once it
    answers: (process, base URL, the line that gave its address). The port is the one it prints, not
    one found free here and let go for it, which another process could take before the server binds it."""

    def start(target, *options):
        process = subprocess.Popen([*mnistcnn_command, "serve", str(target), "--port", "0", *options],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            announced = process.stdout.readline() if select.select([process.stdout], [], [], 60)[0] else ""
            port = re.search(r" at http://\S+:(\d+)/", announced)
            assert port, f"no address printed: {announced!r}"
            url = f"http://127.0.0.1:{port.group(1)}"
            with urllib.request.urlopen(url + "/api/model", timeout=60):  # it listens before it prints the line
                pass
        except (AssertionError, OSError) as err:
            process.kill()
            pytest.fail(f"mnistcnn serve did not answer ({err}): {process.communicate()}")
        return process, url, announced

    return start


def stop_server(process) -> tuple[int, str, str]:
    process.send_signal(signal.SIGINT)
    try:
        out, err = process.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        out, err = process.communicate()
    return process.returncode, out, err


def test_ctrl_c_stops_the_server_while_a_client_stalls_mid_body(trained_run, start_server):
    # uvicorn waited, silently and for ever, for a request whose body stopped coming (a client on a
    # broken network, a curl left paused): Ctrl-C did nothing, and a second one printed a traceback
    process, url, _ = start_server(trained_run)
    with socket.create_connection(("127.0.0.1", urlsplit(url).port)) as stalled:
        stalled.sendall(b"POST /api/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1000\r\n\r\n\x89PNG")
        with urllib.request.urlopen(f"{url}/api/model", timeout=10):  # the server is past it
            pass
        code, out, err = stop_server(process)
        assert code == 0 and "Traceback" not in err and err.count("\n") <= 1, (code, err)  # uvicorn: a task cut
        assert stalled.recv(65536).startswith(b"HTTP/1.1 503"), "the stalled client is told the server stops"


def test_without_starlette_the_command_says_what_to_install(trained_run, cli_without):
    result = cli_without("starlette", "serve", trained_run)
    assert result.returncode == 2
    assert result.stderr.strip() == ("error: mnistcnn serve needs starlette and uvicorn, which are not installed; "
                                     f"{install_extra('serve')}")


@pytest.mark.parametrize("host", ["127.0.0.1", "0.0.0.0"])
def test_open_without_a_browser_says_to_open_the_page_by_hand(trained_run, cli, monkeypatch, host):
    import webbrowser
    from mnistcnn.serve import server

    opened = []

    def no_browser(url):
        opened.append(url)
        return False  # as webbrowser.open does where it finds no browser

    monkeypatch.setattr(webbrowser, "open", no_browser)
    monkeypatch.setattr(server, "run", lambda app, sock: sock.close())  # no need to serve
    result = cli("serve", trained_run, "--port", "0", "--host", host, "--open")
    assert result.exit_code == 0, result.output
    (page,) = opened
    assert page.startswith("http://127.0.0.1:") and result.stderr.endswith(f"no browser to open here; open {page} "
                                                                          "yourself\n")


def test_port_0_serves_on_a_free_port_and_prints_it(trained_run, mnistcnn_command):
    process = subprocess.Popen([*mnistcnn_command, "serve", str(trained_run), "--port", "0"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = process.stdout.readline().rsplit(" at ", 1)[1].strip()
        assert url.startswith("http://127.0.0.1:") and not url.endswith(":0/"), url
        with urllib.request.urlopen(url + "api/model", timeout=30) as response:
            assert response.status == 200 and "classes" in json.load(response)
    finally:
        code, _, err = stop_server(process)
    assert code == 0, err


def test_the_address_printed_for_every_interface_is_the_machines_name():
    assert url_of("0.0.0.0", 8000) == f"http://{socket.gethostname()}:8000/"
    assert url_of("127.0.0.1", 8000) == "http://127.0.0.1:8000/" and url_of("::1", 80) == "http://[::1]:80/"


def test_a_missing_run_or_a_taken_port_is_one_line(trained_run, cli, tmp_path):
    result = cli("serve", tmp_path / "nothing")
    assert result.exit_code == 2 and result.output.startswith("error: ") and result.output.count("\n") == 1
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        result = cli("serve", trained_run, "--port", taken.getsockname()[1])
    assert result.exit_code == 2 and "choose another --port, or --port 0 for a free one" in result.output
    assert result.output.count("\n") == 1
    elsewhere = cli("serve", trained_run, "--host", "192.0.2.1")  # a documentation address: no machine's
    assert elsewhere.exit_code == 2, elsewhere.output
    assert "192.0.2.1 is not an address of this machine; choose another --host" in elsewhere.output


def test_a_host_given_with_its_port_says_to_give_the_port_apart(trained_run, cli):
    result = cli("serve", trained_run, "--host", "localhost:8080")
    assert result.exit_code == 2 and result.output == ("error: --host localhost:8080: a host and a port; give them "
                                                       "apart: --host localhost --port 8080\n"), result.output


@pytest.mark.parametrize("host", ["localhost:", "[::1", "[::1]x", "localhost:\u0663", ":8000"])
def test_a_host_with_no_port_after_its_colon_is_not_told_to_give_one_apart(host):
    """'localhost:' was told '--host localhost --port ' (no port), '[::1' '--host  --port 1'."""
    assert host_names(host)[-1] == host  # a name as any other, which listening_socket then finds not to resolve


def test_a_real_server_refuses_paths_out_of_its_files_and_warns_beyond_loopback(trained_run, start_server):
    process, url, announced = start_server(trained_run, "--host", "0.0.0.0", "--allow-host", "proxy.example")
    port = urlsplit(url).port
    try:
        for host, status in (("attacker.example", b"400"), ("proxy.example", b"200"), (socket.gethostname(), b"200")):
            with socket.create_connection(("127.0.0.1", port)) as sock:
                sock.sendall(f"GET /api/model HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n"
                             .encode())
                assert b"".join(iter(lambda: sock.recv(65536), b"")).startswith(b"HTTP/1.1 " + status), host
        for raw in ("/static/../../etc/passwd", "/static/..%2f..%2fetc%2fpasswd", "/../../etc/passwd"):
            with socket.create_connection(("127.0.0.1", port)) as sock:  # the path exactly as written
                sock.sendall(f"GET {raw} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
                answer = b"".join(iter(lambda: sock.recv(65536), b""))
            assert answer.startswith(b"HTTP/1.1 404") and b"root:" not in answer, (raw, answer[:200])
        with urllib.request.urlopen(url + "/api/model", timeout=10) as response:
            assert json.load(response)["name"] == "small"
    finally:
        code, _, err = stop_server(process)
    assert code == 0, err
    assert "warning: --host 0.0.0.0 lets other machines reach this page" in err
    assert f"at http://{socket.gethostname()}:{port}/" in announced  # an address other machines can open
    address = network_address("0.0.0.0")  # and one that does not need the name to resolve there
    assert address is None or f"at http://{socket.gethostname()}:{port}/ or http://{address}:{port}/\n" in announced


# -- the page in a real browser ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def chrome():
    """Headless Chromium from Debian's packages through Selenium; skipped when missing, failed in
    CI (bash .ci/run installs it)."""
    browser, driver_path = shutil.which("chromium"), shutil.which("chromedriver")
    try:
        from selenium import webdriver
    except ImportError:
        webdriver = None
    if not (browser and driver_path and webdriver):
        message = ("no headless browser: apt-get install chromium chromium-driver and pip install selenium "
                   "(bash .ci/run does)")
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1280,1400"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    yield driver
    driver.quit()


@pytest.fixture
def artefacts(tmp_path):
    folder = Path(os.environ.get("MNISTCNN_TEST_ARTEFACTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def draw_a_seven(driver, pad):
    """A top bar and a long diagonal, with mouse events, offsets from the pad's centre."""
    from selenium.webdriver.common.action_chains import ActionChains

    points = [(-70, -90), (70, -90), (40, -20), (10, 50), (-10, 110)]
    chain = ActionChains(driver, duration=15).move_to_element_with_offset(pad, *points[0]).click_and_hold()
    for (x0, y0), (x1, y1) in zip(points, points[1:]):
        for _ in range(8):
            chain.move_by_offset(round((x1 - x0) / 8), round((y1 - y0) / 8))
    chain.release().perform()


def predicted_by_predict(served, picture: bytes) -> dict:
    """mnistcnn predict's answer for a picture: its functions, on the fast plan the page's server
    computes with, so that a class or a doubt two paths' rounding could swap is the same (the
    plain model's agreement with the plan is test_predictions_equal_mnistcnn_predicts's)."""
    result = dict(zip(("image", "doubt"), prepare(read_grey(io.BytesIO(picture), name="the picture"))))
    classify(served.plan, served.preprocess, [result], served.classes)
    return result


def upload_refused_then_accepted(driver, wait, folder, digit: np.ndarray) -> str:
    """A text file chosen as the picture: its refusal shown on the page; then ``digit`` as dark ink
    on a larger light picture: the message gone, the page's prediction returned."""
    from selenium.webdriver.common.by import By

    (folder / "notes.txt").write_text("not a digit")
    (folder / "upload.png").write_bytes(png_bytes(255 - np.asarray(Image.fromarray(digit).resize((140, 140)))))
    chooser = driver.find_element(By.ID, "upload")
    chooser.send_keys(str(folder / "notes.txt"))
    wait.until(lambda d: d.find_element(By.ID, "message").is_displayed())
    assert driver.find_element(By.ID, "message-text").text == (
        f"notes.txt: is not a picture in a format known here; give a picture of a digit as "
        f"{', '.join(upload_formats())}")
    chooser.send_keys(str(folder / "upload.png"))
    wait.until(lambda d: not d.find_element(By.ID, "message").is_displayed())
    return driver.find_element(By.ID, "prediction").text


EVERY_PANEL_PAINTED = """return [...document.querySelectorAll('#layers .layer')].map(panel =>
    [...panel.querySelectorAll('canvas')].some(c => c.width > 0 &&
        c.getContext('2d').getImageData(0, 0, c.width, c.height).data[3] === 255));"""


def test_drawing_in_a_real_browser_predicts_as_mnistcnn_predict(chrome, trained_run, start_server, artefacts):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    target = Path(os.environ.get("MNISTCNN_TEST_SERVE_RUN") or trained_run)
    process, url, _ = start_server(target)
    try:
        chrome.get(url)
        wait = WebDriverWait(chrome, 30)
        wait.until(lambda d: d.execute_script("return window.serveState.prediction !== null"))
        assert chrome.execute_script("return window.serveState.prediction.doubt") == "blank"
        draw_a_seven(chrome, chrome.find_element(By.ID, "pad"))
        wait.until(lambda d: d.execute_script("return window.serveState.timings.length > 0 && "
                                              "window.serveState.gradients !== null"))
        drawn = base64.b64decode(chrome.execute_script(
            "return document.getElementById('pad').toDataURL('image/png').split(',')[1]"))
        served = open_model(target)
        want = predicted_by_predict(served, drawn)
        state = chrome.execute_script("return window.serveState.prediction")
        shown = want["prediction"] + "?" * bool(want["doubt"])  # a guess is marked as predict marks it
        assert chrome.find_element(By.ID, "prediction").text == shown and want["prediction"] == state["prediction"]
        np.testing.assert_array_equal(np.frombuffer(base64.b64decode(state["image"]), np.uint8).reshape(28, 28),
                                      want["image"])
        assert chrome.execute_script(EVERY_PANEL_PAINTED) == [True] * len(served.model.layers)
        chrome.find_elements(By.CSS_SELECTOR, "#layers .layer canvas.map")[3].click()
        detail = chrome.find_element(By.ID, "detail-map")
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#detail-filter canvas"))
        ActionChains(chrome).move_to_element_with_offset(detail, 8, -10).click().perform()
        wait.until(lambda d: "the engine computed" in d.find_element(By.ID, "arithmetic-sum").text)
        chrome.save_screenshot(str(artefacts / "serve-draw.png"))
        drawn_value = chrome.execute_script("return window.serveState.arithmetic.value")
        uploaded = upload_refused_then_accepted(chrome, wait, artefacts, served.test_x[0, :, :, 0])
        want = predicted_by_predict(served, (artefacts / "upload.png").read_bytes())
        assert uploaded == want["prediction"] + "?" * bool(want["doubt"])
        # the arithmetic follows the picture: the value the API gives for the uploaded one, not the drawing's
        explained = chrome.execute_script("return window.serveState.explained")
        request = urllib.request.Request(url + "/api/explain", method="POST", headers={"content-type":
                                         "application/json"}, data=json.dumps(
                                             {"image": chrome.execute_script("return window.serveState.image"),
                                              **explained}).encode())
        with urllib.request.urlopen(request, timeout=30) as answer:
            fresh = json.loads(answer.read())["value"]
        wait.until(lambda d: d.execute_script("return window.serveState.arithmetic.value") == fresh)
        assert fresh != drawn_value
        assert chrome.execute_script("return window.serveState.ink") == "#000"  # dark ink on the light upload
        chrome.find_elements(By.CSS_SELECTOR, "#layers .layer canvas.map")[4].click()  # another map
        wait.until(lambda d: not d.find_element(By.ID, "arithmetic").is_displayed())
        chrome.set_window_size(390, 844)  # a phone: nothing wider than the screen
        assert chrome.execute_script("return document.documentElement.scrollWidth") <= 390
        chrome.find_element(By.ID, "tab-run").click()
        cell = wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#confusion td.cell.diagonal"))[1]
        cell.click()
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#cell-images canvas")) > 0)
        assert chrome.find_element(By.ID, "cell-title").text.startswith("True 1, predicted 1:")
        # an accuracy curve's axis in percent, as every other accuracy on the page (it read 0.939 to 0.984)
        axis = chrome.execute_script("return document.getElementById('curve-accuracy').getAttribute('aria-label')")
        assert re.fullmatch(r"accuracy per epoch, training and validation: \d+\.\d\d% to \d+\.\d\d%", axis), axis
        assert chrome.execute_script("return document.documentElement.scrollWidth") <= 390
        card = "document.getElementById('confusion').parentElement"  # the matrix fits without scrolling
        assert chrome.execute_script(f"return {card}.scrollWidth <= {card}.clientWidth"), \
            chrome.execute_script(f"return [{card}.scrollWidth, {card}.clientWidth, window.innerWidth]")
        chrome.save_screenshot(str(artefacts / "serve-run.png"))
    finally:
        code, _, err = stop_server(process)
    assert code == 0, err


def test_a_picture_sent_as_a_forms_file_predicts_as_the_raw_picture(client, served):
    picture = png_bytes(served.test_x[3, :, :, 0])
    raw = post_picture(client, picture).json()
    form = client.post("/api/predict", files={"picture": ("../../etc/passwd", picture, "image/png")})  # name unused
    assert form.status_code == 200 and form.json()["prediction"] == raw["prediction"], form.text
    assert form.json()["top"] == raw["top"]
    empty = client.post("/api/predict", data={"note": "no file"}, files={"other": ("", b"", "image/png")})
    assert empty.status_code == 400 and "no picture" in empty.json()["error"], empty.text
    # the name as text, escaped (a browser sends a quote as %22; a client may send it raw); no file is opened by it
    named = client.post("/api/predict", content=b'--XX\r\nContent-Disposition: form-data; name="picture"; '
                        b'filename="../notes \\"1\\"\a.txt"\r\n\r\nnot a digit\r\n--XX--\r\n',
                        headers={"content-type": "multipart/form-data; boundary=XX"})
    assert named.status_code == 415 and named.json()["error"] == (
        '../notes "1"\\x07.txt: is not a picture in a format known here; give a picture of a digit as '
        f"{', '.join(upload_formats())}"), named.text
    long = client.post("/api/predict", files={"picture": ("n" * 500 + ".txt", b"not a digit", "text/plain")})
    assert long.json()["error"].startswith("n" * 77 + "...: is not a picture"), long.text
    broken = post_picture(client, picture, "multipart/form-data")  # no boundary
    assert broken.status_code == 400 and "no boundary" in broken.json()["error"], broken.text


def test_a_forms_picture_is_held_to_the_picture_limit_and_named(client):
    # the form's own lines counted against the picture's 8 MB: a picture under it was refused, and no 413 named
    # the file; the page learns the limit, to refuse a picture over it before sending it
    under = client.post("/api/predict", files={"picture": ("almost.png", b"\x89PNG" + bytes(MAX_PICTURE_BYTES - 4),
                                                           "image/png")})
    assert under.status_code != 413 and under.json()["error"].startswith("almost.png: "), under.text
    over = client.post("/api/predict", files={"picture": ("over.png", b"\x89PNG" + bytes(MAX_PICTURE_BYTES - 3),
                                                          "image/png")})
    assert over.status_code == 413 and over.json()["error"] == ("over.png: is larger than 8 MB, the limit; send a "
                                                                "smaller one"), over.text
    assert client.get("/api/model").json()["max_picture_bytes"] == MAX_PICTURE_BYTES


def form(*parts: bytes) -> bytes:
    """A multipart form of ``parts`` (each its headers, a blank line and its content), boundary XX."""
    return b"".join(b"--XX\r\n" + part + b"\r\n" for part in parts) + b"--XX--\r\n"


def test_a_form_is_read_within_bounds_of_parts_and_headers(client, served):
    # Python's email parser read the whole form on the event loop: a filename of 256 kB of encoded words
    # took it seconds and gigabytes (it grows faster than the header), a form of 8 MB of small fields over
    # half a minute, while the server answered no one
    picture = png_bytes(served.test_x[3, :, :, 0])
    headers = {"content-type": "multipart/form-data; boundary=XX"}
    file = b'Content-Disposition: form-data; name="picture"; filename="7.png"\r\n\r\n' + picture
    fields = [b'Content-Disposition: form-data; name="note%d"\r\n\r\na note: --XX-- within a line is no boundary' % i
              for i in range(MAX_FORM_PARTS - 1)]
    answer = client.post("/api/predict", content=form(*fields, file), headers=headers)
    assert answer.status_code == 200 and answer.json()["image"] == post_picture(client, picture).json()["image"]
    lines = b"\r\n" * 1000 + picture  # a file's content is not a form's lines
    assert client.post("/api/predict", content=form(file.replace(picture, lines)), headers=headers).status_code == 415
    # a file after 16 other parts: the message said "more than 16 parts before its file"
    many = client.post("/api/predict", content=form(fields[0], *fields, file), headers=headers)
    assert many.status_code == 400 and many.json()["error"] == (
        f"the form's file is not among its first {MAX_FORM_PARTS} parts; send the picture as its first file, or as "
        "the request's body"), many.text[:300]
    words = b"=?utf-8?q?a?= " * 20000
    named = client.post("/api/predict", content=form(b'Content-Disposition: form-data; name="picture"; filename="' +
                                                     words + b'"\r\n\r\n' + picture), headers=headers)
    assert named.status_code == 400 and named.json()["error"] == (
        f"a part of the form has over {MAX_PART_HEADERS >> 10} kB of headers; send the picture as the request's "
        "body, or as a form's file with a shorter name"), named.text[:300]
    assert post_picture(client, picture).status_code == 200


SIZES = {"laptop": (1366, 768), "phone": (390, 844)}
IN_VIEW = """const box = arguments[0].getBoundingClientRect();
    return box.top >= 0 && box.bottom <= innerHeight && box.left >= 0 && box.right <= innerWidth;"""


def open_page(driver, url, size):
    """The page in a viewport of one of SIZES (the window a little larger, by its own frame), its
    first (blank) prediction in."""
    from selenium.webdriver.support.ui import WebDriverWait

    width, height = SIZES[size]
    driver.set_window_size(width, height)
    frame = driver.execute_script("return [outerWidth - innerWidth, outerHeight - innerHeight]")
    driver.set_window_size(width + frame[0], height + frame[1])
    driver.get(url)
    wait = WebDriverWait(driver, 30)
    wait.until(lambda d: d.execute_script("return window.serveState.prediction !== null"))
    return wait


@pytest.fixture
def page_url(trained_run, start_server):
    """A real server of the shared run for one browser test: its address; it must stop cleanly after."""
    process, url, _ = start_server(trained_run)
    yield url
    code, _, err = stop_server(process)
    assert code == 0, err


def drawn_seven(driver, wait):
    """A seven drawn on the pad, its prediction and gradients in."""
    from selenium.webdriver.common.by import By

    pad = driver.find_element(By.ID, "pad")
    driver.execute_script("arguments[0].scrollIntoView({block: 'nearest'})", pad)
    driver.execute_script("window.serveState.timings = []")
    draw_a_seven(driver, pad)
    wait.until(lambda d: d.execute_script("return window.serveState.timings.length > 0 && "
                                          "window.serveState.gradients !== null"))


@pytest.mark.parametrize("size", SIZES)
def test_a_map_clicked_far_down_the_page_brings_its_enlarged_view_into_sight(chrome, page_url, artefacts, size):
    # the enlarged view opens in a card above the layers: a deeper layer's map, clicked after
    # scrolling, opened it off screen and the page looked as if nothing had happened
    from selenium.webdriver.common.by import By

    wait = open_page(chrome, page_url, size)
    drawn_seven(chrome, wait)
    deepest = chrome.find_elements(By.CSS_SELECTOR, "#layers canvas.map[title^=channel]")[-1]
    chrome.execute_script("arguments[0].scrollIntoView({block: 'center'})", deepest)
    assert chrome.execute_script("return document.getElementById('layers').getBoundingClientRect().top < 0")
    deepest.click()
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#detail-filter canvas"))
    wait.until(lambda d: d.execute_script(IN_VIEW, d.find_element(By.ID, "detail-map")))
    chrome.save_screenshot(str(artefacts / f"serve-deep-map-{size}.png"))


CARDS = """return [...document.querySelectorAll('#draw > .row > .card')].map(card => {
    const box = card.getBoundingClientRect();
    return {name: card.querySelector('h2').textContent, top: box.top, bottom: box.bottom, left: box.left,
            right: box.right};
});"""


@pytest.mark.parametrize("size", SIZES)
def test_the_prediction_is_in_sight_beside_or_under_the_pad_after_drawing(chrome, page_url, artefacts, size):
    # on a phone the cards stacked as pad, "The model sees", prediction: the answer to a drawing
    # was below the fold, under a header whose model name took four lines
    from selenium.webdriver.common.by import By

    wait = open_page(chrome, page_url, size)
    drawn_seven(chrome, wait)
    chrome.execute_script("scrollTo(0, 0)")
    assert chrome.execute_script(IN_VIEW, chrome.find_element(By.CSS_SELECTOR, ".answer"))
    cards = chrome.execute_script(CARDS)
    assert [card["name"] for card in sorted(cards, key=lambda c: (c["top"], c["left"]))][:2] == \
        ["Draw a digit", "The model sees" if size == "laptop" else "Prediction"]
    for i, one in enumerate(cards):  # no card over another
        for other in cards[i + 1:]:
            assert (one["right"] <= other["left"] or other["right"] <= one["left"] or
                    one["bottom"] <= other["top"] or other["bottom"] <= one["top"]), (one, other)
    assert chrome.execute_script("return document.documentElement.scrollWidth <= innerWidth")
    name = chrome.find_element(By.ID, "model-name")
    assert name.size["height"] <= 2 * float(name.value_of_css_property("line-height")[:-2]), name.size
    chrome.save_screenshot(str(artefacts / f"serve-drawn-{size}.png"))


def test_the_page_gets_each_doubts_meaning_in_predicts_words_or_the_pads(client):
    advice = client.get("/api/model").json()["advice"]
    assert advice["drawing"] == DRAWN_ADVICE and set(DRAWN_ADVICE) == set(DOUBT_ADVICE)
    assert advice["picture"] == {**DOUBT_ADVICE, LOW_CONFIDENCE: DRAWN_ADVICE[LOW_CONFIDENCE]}  # no option here
    assert "--" not in " ".join(advice["drawing"].values()) + " ".join(advice["picture"].values())


VERDICT = """return {prediction: document.getElementById('prediction').offsetParent !== null &&
    document.getElementById('prediction').textContent, doubt: !document.getElementById('doubt').hidden &&
    document.getElementById('doubt').textContent, advice: document.getElementById('advice').textContent};"""


def test_an_empty_pad_invites_a_drawing_and_a_doubt_says_why(chrome, page_url, artefacts):
    # an empty pad showed a big "-", a yellow "blank" badge, empty bars and an empty saliency box: a warning
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    wait = open_page(chrome, page_url, "laptop")
    invitation = {"prediction": False, "doubt": False, "advice": DRAWN_ADVICE[BLANK]}
    assert chrome.execute_script(VERDICT) == invitation
    chrome.save_screenshot(str(artefacts / "serve-empty.png"))
    ActionChains(chrome).move_to_element(chrome.find_element(By.ID, "pad")).click().perform()  # a tap: a dot
    wait.until(lambda d: d.execute_script(VERDICT)["doubt"])
    shown = chrome.execute_script(VERDICT)
    assert shown["doubt"] == NO_SINGLE_DIGIT and shown["prediction"].endswith("?"), shown
    assert shown["advice"] == DRAWN_ADVICE[NO_SINGLE_DIGIT]
    chrome.save_screenshot(str(artefacts / "serve-dot.png"))
    chrome.find_element(By.ID, "clear").click()
    wait.until(lambda d: d.execute_script(VERDICT) == invitation)


@pytest.mark.parametrize("size", SIZES)
def test_a_refused_upload_names_its_file_over_the_page_without_moving_it(chrome, page_url, artefacts, size):
    # "upload: is not a picture ...; give a PNG or JPEG" named no file, listed two of the formats
    # taken, and pushed the pad and the prediction down while it showed
    from selenium.webdriver.common.by import By

    wait = open_page(chrome, page_url, size)
    pad_top = "return document.getElementById('pad').getBoundingClientRect().top"
    before = chrome.execute_script(pad_top)
    (artefacts / "notes <b>1.txt").write_text("not a digit")
    chrome.find_element(By.ID, "upload").send_keys(str(artefacts / "notes <b>1.txt"))
    message = wait.until(lambda d: d.find_element(By.ID, "message") if d.find_element(By.ID, "message")
                         .is_displayed() else None)
    assert chrome.find_element(By.ID, "message-text").text.startswith("notes <b>1.txt: is not a picture")
    assert not chrome.find_elements(By.CSS_SELECTOR, "#message b")  # the name is text, not markup
    assert chrome.execute_script(IN_VIEW, message) and chrome.execute_script(pad_top) == before
    chrome.save_screenshot(str(artefacts / f"serve-refused-upload-{size}.png"))
    chrome.find_element(By.ID, "message-close").click()
    assert not message.is_displayed()


# every form the page sends from now on, by the address it goes to
FORMS_SENT = """window.formsSent = [];
    const send = window.fetch;
    window.fetch = (url, options) => {
      if (options && options.body instanceof FormData) window.formsSent.push(String(url));
      return send(url, options);
    };"""


def test_a_picture_over_the_limit_is_refused_by_name_before_it_is_sent(chrome, page_url, artefacts):
    # the page sent it and showed the server's 413, "the picture is larger than 8 MB", which named no file
    from selenium.webdriver.common.by import By

    wait = open_page(chrome, page_url, "laptop")
    chrome.execute_script(FORMS_SENT)
    (artefacts / "big photo.jpg").write_bytes(b"\xff\xd8\xff" + bytes(MAX_PICTURE_BYTES))
    chrome.find_element(By.ID, "upload").send_keys(str(artefacts / "big photo.jpg"))
    wait.until(lambda d: d.find_element(By.ID, "message").is_displayed())
    assert chrome.find_element(By.ID, "message-text").text == (
        "big photo.jpg: is 8.1 MB, larger than the 8 MB a picture may be; choose a smaller one, or save it smaller "
        "(as a JPEG, or with fewer pixels)")
    assert chrome.execute_script("return window.formsSent") == []
    (artefacts / "upload.png").write_bytes(png_bytes(255 - np.asarray(Image.new("L", (140, 140), 0))))
    chrome.find_element(By.ID, "upload").send_keys(str(artefacts / "upload.png"))  # one under it is sent
    wait.until(lambda d: d.execute_script("return window.formsSent.length") == 1)


PAD_INK = """const pad = document.getElementById('pad');
    const data = pad.getContext('2d').getImageData(0, 0, pad.width, pad.height).data;
    let darkest = 255;
    for (let i = 0; i < data.length; i += 4) darkest = Math.min(darkest, data[i]);
    return {corner: data[0], darkest: darkest};"""


@pytest.mark.parametrize("ink_grey", [0, 255], ids=["black-ink", "white-ink"])
def test_a_drawing_on_a_transparent_canvas_shows_on_the_pad_and_stays_under_a_stroke(chrome, page_url, served,
                                                                                       artefacts, ink_grey):
    # a drawing app's dark strokes on a transparent canvas (read by predict over white paper) lay on the pad as
    # black on black: the pad looked empty, and a stroke drawn over it sent the pad without the digit; white strokes
    # (read by predict from their opacity alone, as dark ink on white) then lay white on white
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    wait = open_page(chrome, page_url, "laptop")
    digit = np.asarray(Image.fromarray(served.test_x[0, :, :, 0]).resize((140, 140)))
    strokes = np.full((140, 140, 4), ink_grey, np.uint8)
    strokes[..., 3] = digit  # the ink's opacity the digit's
    Image.fromarray(strokes, "RGBA").save(artefacts / "transparent.png")
    chrome.find_element(By.ID, "upload").send_keys(str(artefacts / "transparent.png"))
    wait.until(lambda d: d.execute_script("return window.serveState.source === 'picture'"))
    uploaded = chrome.execute_script("return window.serveState.prediction.prediction")
    assert uploaded == predicted_by_predict(served, (artefacts / "transparent.png").read_bytes())["prediction"]
    ink = chrome.execute_script(PAD_INK)
    assert ink["corner"] > 200 and ink["darkest"] < 50, ink  # dark strokes on white paper, as predict reads them
    chrome.execute_script("window.serveState.timings = []")
    pad = chrome.find_element(By.ID, "pad")
    ActionChains(chrome).move_to_element_with_offset(pad, -130, -130).click().perform()  # a dot in a corner
    wait.until(lambda d: d.execute_script("return window.serveState.timings.length > 0"))
    assert chrome.execute_script("return window.serveState.prediction.prediction") == uploaded
    chrome.save_screenshot(str(artefacts / f"serve-transparent-upload-{ink_grey}.png"))


LOGIT_NAMES = """const panels = document.querySelectorAll('#layers .layer');
    const last = panels[panels.length - 1];
    const strip = last.querySelector('canvas.map').getBoundingClientRect();
    return [...last.querySelectorAll('.unit-names span')].map(label => {
        const box = label.getBoundingClientRect();
        return {name: label.textContent, cell: Math.floor((box.left + box.width / 2 - strip.left) / strip.width * 10),
                below: box.top >= strip.bottom - 1};
    });"""


@pytest.mark.parametrize("size", SIZES)
def test_the_last_layer_s_logits_are_named_by_their_classes_under_their_cells(chrome, page_url, served, artefacts,
                                                                              size):
    # the last layer's strip of ten logits had no names: which cell was the 7's could only be counted
    wait = open_page(chrome, page_url, size)
    drawn_seven(chrome, wait)
    names = chrome.execute_script(LOGIT_NAMES)
    assert [name["name"] for name in names] == served.classes
    assert [name["cell"] for name in names] == list(range(10)) and all(name["below"] for name in names), names
    assert chrome.execute_script("return document.documentElement.scrollWidth <= innerWidth")
    chrome.execute_script("document.querySelector('#layers .layer:last-child').scrollIntoView()")
    chrome.save_screenshot(str(artefacts / f"serve-logits-{size}.png"))


PAINTED = """const [index, source, detail] = arguments;
    const maps = window.serveState[source].layers[index].maps;
    const codes = Uint8Array.from(atob(maps.data), (c) => c.charCodeAt(0));
    const canvases = detail ? [document.getElementById('detail-map')]
        : [...document.querySelectorAll(`#layers .layer[data-layer="${index}"] canvas.map`)];
    const first = detail ? window.serveState.detail.channel : 0;
    const pixels = [];
    canvases.forEach((canvas, c) => {
        const size = canvas.width * canvas.height;
        const data = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
        for (let i = 0; i < size; i++) pixels.push([codes[(first + c) * size + i], ...data.slice(4 * i, 4 * i + 3)]);
    });
    return {signed: maps.signed, pixels: pixels};"""


def painted_with(driver, index: int, source: str, detail: bool = False) -> tuple[bool, np.ndarray, str]:
    """Layer ``index``'s maps as the page painted them (its panel, or the enlarged ``detail``) from
    ``source`` (prediction, gradients): whether they are signed, (code, r, g, b) per pixel, and the
    colour map's name (SIGNED, ACTIVATION) whose colours the codes were painted in."""
    painted = driver.execute_script(PAINTED, index, source, detail)
    pixels = np.asarray(painted["pixels"])
    for name in ("SIGNED", "ACTIVATION"):
        table = np.asarray(driver.execute_script(f"return {name}"))
        if np.abs(pixels[:, 1:] - table[pixels[:, 0]]).max() <= 1:
            return painted["signed"], pixels, name
    return painted["signed"], pixels, "neither"


def test_a_conv_layers_maps_are_painted_diverging_about_0_and_a_relus_one_sided(chrome, page_url, served, artefacts):
    # every layer's activations were painted from black (its least value) to light yellow (its
    # largest): a conv's negative responses, which its relu zeros, looked like weak positive ones
    from selenium.webdriver.common.by import By

    wait = open_page(chrome, page_url, "laptop")
    drawn_seven(chrome, wait)
    kinds = [layer.type_name for layer in served.model.layers]
    conv, relu = kinds.index("conv2d"), kinds.index("relu")
    signed, pixels, colours = painted_with(chrome, conv, "prediction")
    assert signed and colours == "SIGNED"
    middle = pixels[(pixels[:, 0] >= 122) & (pixels[:, 0] <= 133), 1:]  # about 0: the map's middle, light grey
    assert len(middle) and middle.min() >= 235 and np.abs(middle[:, 0] - middle[:, 2]).max() <= 12
    lowest, highest = pixels[pixels[:, 0] <= 10, 1:], pixels[pixels[:, 0] >= 245, 1:]
    assert len(lowest) + len(highest)  # a scale symmetric about 0 reaches one end at least
    assert (lowest[:, 2] > lowest[:, 0] + 50).all() and (highest[:, 0] > highest[:, 2] + 50).all()  # blue, red
    stats = chrome.find_elements(By.CSS_SELECTOR, "#layers .layer .stats")
    assert "white 0" in stats[conv].text and "light yellow" in stats[relu].text
    signed, pixels, colours = painted_with(chrome, relu, "prediction")
    assert not signed and colours == "ACTIVATION" and pixels[pixels[:, 0] == 0, 1:].max() <= 10  # its zeros black
    chrome.find_elements(By.CSS_SELECTOR, f'#layers .layer[data-layer="{conv}"] canvas.map')[0].click()
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#detail-filter canvas"))
    assert painted_with(chrome, conv, "prediction", detail=True)[::2] == (True, "SIGNED")
    assert "white 0" in chrome.find_element(By.ID, "detail-map-caption").text
    chrome.save_screenshot(str(artefacts / "serve-signed-conv.png"))
    chrome.find_element(By.CSS_SELECTOR, "input[name=show][value=gradients]").click()
    assert painted_with(chrome, relu, "gradients")[::2] == (True, "SIGNED")  # a gradient's sign is its meaning


KEYBOARD_OUTLINE = "return getComputedStyle(arguments[0]).outlineStyle !== 'none'"


def test_the_upload_and_every_click_target_work_from_the_keyboard(chrome, page_url, artefacts):
    # the file input was display: none, out of the tab order: no upload without a mouse; the feature maps and the
    # confusion matrix's cells took clicks only
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    wait = open_page(chrome, page_url, "laptop")
    drawn_seven(chrome, wait)
    active = "return document.activeElement"
    chrome.execute_script("document.getElementById('clear').focus()")
    ActionChains(chrome).send_keys(Keys.TAB).perform()
    assert chrome.execute_script(active).get_attribute("id") == "upload"
    assert chrome.execute_script(KEYBOARD_OUTLINE, chrome.find_element(By.CSS_SELECTOR, "label.upload"))
    chrome.save_screenshot(str(artefacts / "serve-upload-focused.png"))
    tab_stops = "return [...document.querySelectorAll(arguments[0])].every(e => e.tabIndex === 0)"
    assert chrome.execute_script(tab_stops, "#layers canvas.map[title^=channel]")
    chrome.execute_script("document.querySelector('#layers canvas.map[title^=channel]').focus()")
    ActionChains(chrome).send_keys(Keys.ENTER).perform()
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#detail-filter canvas"))
    chrome.execute_script("document.getElementById('tab-run').focus()")
    ActionChains(chrome).send_keys(Keys.ENTER).perform()
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#confusion td.cell"))
    assert chrome.execute_script(tab_stops, "#confusion td.cell")
    chrome.execute_script("document.querySelectorAll('#confusion td.cell.diagonal')[1].focus()")
    ActionChains(chrome).send_keys(Keys.SPACE).perform()
    wait.until(lambda d: d.find_element(By.ID, "cell-title").text.startswith("True 1, predicted 1:"))


def test_the_pages_test_predictions_take_the_runs_evaluation_batch(eval_batch_run, evaluation_batches):
    from mnistcnn.serve.inside import open_model, test_predictions

    run, batch = eval_batch_run
    test_predictions(open_model(run))
    assert set(evaluation_batches) == {batch}


@pytest.mark.parametrize("host,fix", [("http://localhost:8000/", "--host localhost --port 8000"),
                                      ("https://127.0.0.1:8000", "--host 127.0.0.1 --port 8000"),
                                      ("http://[::1]:8000/draw", "--host ::1 --port 8000"),
                                      ("http://localhost/", "--host localhost")])
def test_a_url_copied_from_the_address_bar_is_told_its_host_and_port(host, fix):
    with pytest.raises(UsageError) as refused:
        host_names(host)
    assert str(refused.value) == f"--host {host}: a URL; give its host: {fix}"
