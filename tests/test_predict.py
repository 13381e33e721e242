"""mnistcnn predict on people's pictures: photos cleaned as MNIST was made, doubts flagged,
batches, the images the model saw, large pictures.

Run as a script, ``python tests/test_predict.py RUN``, it prints the accuracy on clean MNIST
test digits and on the photo-like set below, and the share of blank and noise pictures flagged."""
import errno
import io
import json
import os
import shutil
import struct
import sys
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from mnistcnn.cli import console
from mnistcnn.data import load_dataset
from mnistcnn.engine.model import Sequential
from mnistcnn.errors import UsageError
from mnistcnn.predict import (BLANK, LOW_CONFIDENCE, MAX_PIXELS, MAX_STROKE, MIN_STROKE, NO_SINGLE_DIGIT, READ_SIDE,
                              SIDE, PictureTooLarge, check_digit_model, classify, expand_inputs, prepare, read_grey,
                              shape_doubt, stroke_width)
from mnistcnn.trainer import load_model


# -- a photo-like test set: MNIST test digits as phone photos of ink on paper -------------------
def _smooth_field(rng, size, cells):
    """Low-frequency texture in -1..1: a random ``cells`` x ``cells`` grid upsampled bicubically."""
    grid = rng.uniform(-1, 1, (cells, cells)).astype(np.float32)
    return np.asarray(Image.fromarray(grid, mode="F").resize((size, size), Image.BICUBIC), dtype=np.float64)


def _paper(rng, size, level):
    """A sheet photographed unevenly: a lighting gradient, a soft shadow, paper texture and noise."""
    ys, xs = np.mgrid[0:size, 0:size] / size
    angle = rng.uniform(0, 2 * np.pi)
    paper = level + rng.uniform(-60, 60) * ((np.cos(angle) * xs + np.sin(angle) * ys) - 0.5)
    edge = rng.uniform(0.2, 0.8)
    paper -= rng.uniform(0, 50) / (1 + np.exp(-(xs * np.cos(angle + 1) + ys - edge - 0.5) * 12))  # a shadow
    paper += rng.uniform(0, 12) * _smooth_field(rng, size, int(rng.integers(4, 16)))
    return paper + rng.normal(0, rng.uniform(1, 10), (size, size))


def photo_like(digit, rng):
    """An MNIST digit (uint8 28x28, white on black) as a phone photo of ink on paper: uint8 RGB of
    60 to 300 px, any lighting, either polarity, coloured ink, JPEG-compressed or not."""
    size = int(rng.integers(60, 301))
    dark_ink = rng.random() < 0.7
    span = int(size * rng.uniform(0.4, 0.85))
    ink = np.asarray(Image.fromarray(digit).resize((span, span), Image.BICUBIC), dtype=np.float64) / 255
    alpha = np.zeros((size, size))
    top, left = rng.integers(0, size - span + 1, 2)
    alpha[top:top + span, left:left + span] = np.clip(ink, 0, 1)
    level = rng.uniform(140, 235) if dark_ink else rng.uniform(20, 90)
    paper = _paper(rng, size, level)
    contrast = rng.uniform(0.5, 1.0)
    # blue, black, red... ink darker than the paper, or chalk lighter than the board
    ink_rgb = rng.uniform(0, 0.5, 3) * level if dark_ink else rng.uniform(0.75, 1.0, 3) * 255
    rgb = np.stack([paper + contrast * alpha * (ink_rgb[c] - paper) for c in range(3)], axis=-1)
    picture = Image.fromarray(np.clip(np.rint(rgb), 0, 255).astype(np.uint8))
    if rng.random() < 0.5:
        buffer = io.BytesIO()
        picture.save(buffer, "JPEG", quality=int(rng.integers(60, 95)))
        picture = Image.open(buffer)
    return np.asarray(picture.convert("RGB"))


def not_a_digit(rng, kind):
    """A picture with no digit: ``blank`` paper (lit unevenly) or ``noise`` of some kind."""
    size = int(rng.integers(60, 301))
    if kind == "blank":
        grey = _paper(rng, size, rng.uniform(20, 235))
    elif rng.random() < 0.5:
        grey = rng.uniform(0, 255, (size, size))
    else:  # blotchy noise: a few grain sizes mixed
        grey = 128 + 60 * _smooth_field(rng, size, int(rng.integers(8, 40))) + rng.normal(0, 30, (size, size))
    grey = np.clip(np.rint(grey), 0, 255).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=-1)


def grey_of(rgb):
    """What read_grey makes of an RGB picture."""
    return np.asarray(Image.fromarray(rgb).convert("L"), dtype=np.float64)


def drawn_cleanly(digit):
    """The same digit drawn cleanly: black ink on white at 200 px, no light, texture or noise."""
    return np.asarray(Image.fromarray(255 - digit).resize((200, 200), Image.BICUBIC), dtype=np.float64)


@pytest.fixture(scope="module")
def sample_digits(mnist):
    data = mnist
    pick = np.random.default_rng(0).choice(len(data.test_labels), 200, replace=False)
    return data.test_images[pick].reshape(-1, 28, 28), data.test_labels[pick]


def engine_predictions(run_dir, images):
    model, _, preprocess = load_model(run_dir / "checkpoints" / "best.npz")
    return model.predict_logits(images[..., None] if images.ndim == 3 else images, 256, preprocess)


def similarity(a, b):
    a, b = a.astype(np.float64).ravel() - a.mean(), b.astype(np.float64).ravel() - b.mean()
    return float(a @ b / np.sqrt((a @ a) * (b @ b)))


def test_a_photo_gives_what_the_digit_drawn_cleanly_gives(sample_digits, trained_run):
    digits, _ = sample_digits
    rng = np.random.default_rng(1)
    digits = digits[:80]
    clean = np.stack([prepare(drawn_cleanly(d))[0] for d in digits])
    photos = [prepare(grey_of(photo_like(d, rng))) for d in digits]
    seen = np.stack([image for image, _ in photos])
    close = [similarity(a, b) > 0.7 for a, b in zip(clean, seen)]
    assert np.mean(close) >= 0.9, f"only {np.mean(close):.0%} of the photos look like the clean digit"
    assert np.mean([doubt is None for _, doubt in photos]) >= 0.95
    same = engine_predictions(trained_run, clean).argmax(1) == engine_predictions(trained_run, seen).argmax(1)
    assert same.mean() >= 0.9, f"the photos change {1 - same.mean():.0%} of the answers"


def test_blank_and_noise_are_flagged_and_clean_digits_are_not(sample_digits):
    rng = np.random.default_rng(2)
    blank = [prepare(grey_of(not_a_digit(rng, "blank")))[1] for _ in range(40)]
    noise = [prepare(grey_of(not_a_digit(rng, "noise")))[1] for _ in range(40)]
    assert np.mean([d == "blank" for d in blank]) >= 0.95, blank
    assert np.mean([d is not None for d in noise]) >= 0.95, noise
    digits, _ = sample_digits
    flagged = [prepare(drawn_cleanly(d))[1] is not None for d in digits]
    assert np.mean(flagged) <= 0.02
    two = np.full((100, 200), 255.0)
    two[:, :100], two[:, 100:] = drawn_cleanly(digits[0])[50:150, 50:150], drawn_cleanly(digits[1])[50:150, 50:150]
    assert prepare(two)[1] == "no single digit"


# -- the command ------------------------------------------------------------------------------
def test_mnist_pngs_get_the_same_predictions_as_the_engine(trained_run, sample_digits, tmp_path, cli):
    images = sample_digits[0][:20]
    for i, image in enumerate(images):
        Image.fromarray(image).save(tmp_path / f"digit{i:02d}.png")
    result = cli("predict", trained_run, tmp_path, "--json")  # a folder: its pictures, sorted
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert [p["path"] for p in report["predictions"]] == [str(tmp_path / f"digit{i:02d}.png") for i in range(20)]
    expected = engine_predictions(trained_run, images).argmax(axis=1)
    assert [int(p["prediction"]) for p in report["predictions"]] == expected.tolist()
    for p in report["predictions"]:
        probs = [t["probability"] for t in p["top"]]
        assert len(probs) == 3 and probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-9


def test_names_with_brackets_or_emoji_codes_are_shown_as_they_are(trained_run, sample_digits, tmp_path, monkeypatch,
                                                                   cli):
    monkeypatch.chdir(tmp_path)  # short relative paths: each fits its column
    Image.fromarray(sample_digits[0][0]).save(tmp_path / "[red]7.png")
    result = cli("predict", trained_run, "[red]7.png", "--save-inputs", "s[x]", "--top", "1")
    assert result.exit_code == 0, result.output
    assert "[red]7.png" in result.output and str(Path("s[x]") / "[red]7.png") in result.output, result.output
    assert (tmp_path / "s[x]" / "[red]7.png").is_file()
    runs = tmp_path / "[red]runs :100:"
    shutil.copytree(trained_run, runs / trained_run.name)
    monkeypatch.setattr(console, "_width", 200)  # the title on one line
    listed = cli("runs", runs)
    assert listed.exit_code == 0 and f"run directories in {runs} " in listed.output, listed.output


def test_a_large_light_background_photo_is_normalised_like_mnist(trained_run, sample_digits, tmp_path, monkeypatch,
                                                                 cli):
    monkeypatch.chdir(tmp_path)  # short relative paths keep the table's columns wide in an 80-column test
    images = sample_digits[0][:20]
    logits = engine_predictions(trained_run, images)
    index = int(np.argmax(logits.max(axis=1) - np.sort(logits, axis=1)[:, -2]))  # the clearest digit
    stretched = Image.fromarray(255 - images[index]).resize((300, 420), Image.BICUBIC)  # dark ink on white
    Image.merge("RGB", [stretched, stretched, stretched]).save(tmp_path / "photo.jpg", quality=90)
    normalised, doubt = prepare(read_grey(tmp_path / "photo.jpg"))
    assert normalised.shape == (28, 28) and normalised.max() > 200 and doubt is None
    assert normalised[:2].max() == 0 and normalised[:, :2].max() == 0  # a black frame around the digit, as MNIST
    result = cli("predict", trained_run, "photo.jpg", "--json", "--save-inputs", "seen")
    assert result.exit_code == 0, result.output
    answer = json.loads(result.output)["predictions"][0]
    assert int(answer["prediction"]) == int(logits[index].argmax()) and answer["doubt"] is None
    assert answer["input_image"] == str(Path("seen") / "photo.png")
    assert np.array_equal(np.asarray(Image.open(answer["input_image"])), normalised)
    table = cli("predict", trained_run, "p*.jpg")  # a glob
    assert table.exit_code == 0 and "photo.jpg" in table.output and "#3" in table.output
    (tmp_path / "photo-notes.txt").write_text("where the photo was taken")
    everything = cli("predict", trained_run, "photo*", "--json")  # takes the pictures it matches, as a folder does
    assert everything.exit_code == 0 and [answer["path"] for answer in json.loads(everything.output)["predictions"]] \
        == ["photo.jpg"]
    (tmp_path / "IMG_0001.HEIC").write_text("a phone's photo, in a format not read here")
    assert json.loads(cli("predict", trained_run, ".", "--json").output)["passed_over"] == [
        str(Path(".") / "IMG_0001.HEIC"), str(Path(".") / "photo-notes.txt")]  # said, not lost without a word
    said = " ".join(cli("predict", trained_run, ".").output.split())
    assert "passed over 2 files whose names are not pictures' (IMG_0001.HEIC, photo-notes.txt); predict reads " \
           ".bmp, .gif" in said, said


def test_a_model_of_other_input_than_mnists_is_refused_by_name():
    small = Sequential.from_config([{"type": "flatten"}, {"type": "dense", "units": 10}], [14, 14, 1],
                                   np.random.default_rng(0))
    with pytest.raises(UsageError) as refused:
        check_digit_model(small, "serve", "runs/small")
    assert str(refused.value) == "runs/small: serve works with models of 28x28x1 input; this one takes 14x14x1"
    mnist_sized = Sequential.from_config([{"type": "flatten"}, {"type": "dense", "units": 10}], [28, 28, 1],
                                         np.random.default_rng(0))
    check_digit_model(mnist_sized, "predict")


def test_a_save_inputs_folder_that_cannot_be_made_stops_before_predicting(trained_run, tmp_path, cli):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    Image.new("L", (50, 50), 255).save(tmp_path / "digit.png")
    result = cli("predict", trained_run, tmp_path / "digit.png", "--save-inputs", blocker / "seen")
    assert result.exit_code == 2 and result.output.count("\n") == 1, result.output
    assert result.output == (f"error: --save-inputs {blocker / 'seen'}: {blocker} is a file, not a folder; write "
                             "elsewhere with --save-inputs DIR\n")


def test_a_model_that_cannot_load_leaves_no_save_inputs_folder_behind(run, tmp_path, cli):
    (run / "checkpoints" / "best.npz").write_bytes(b"")
    Image.new("L", (50, 50), 255).save(tmp_path / "digit.png")
    result = cli("predict", run, tmp_path / "digit.png", "--save-inputs", tmp_path / "seen" / "28x28")
    assert result.exit_code == 2 and "empty (0 bytes)" in result.output and result.output.count("\n") == 1
    assert sorted(path.name for path in tmp_path.iterdir()) == ["digit.png", "runs"]


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="names open files through /proc")
@pytest.mark.parametrize("output", [[], ["--json"]], ids=["table", "json"])
def test_a_disk_that_fills_while_saving_the_inputs_still_gives_the_predictions(trained_run, sample_digits, tmp_path,
                                                                               cli, monkeypatch, output):
    # the predictions were made, then lost: the command said only that a saved input could not be written
    monkeypatch.chdir(tmp_path)
    for name, image in zip(("seven", "two"), sample_digits[0]):
        Image.fromarray(255 - image).resize((90, 90)).save(f"{name}.png")
    expected = json.loads(cli("predict", trained_run, "seven.png", "two.png", "--json").output)["predictions"]
    real, written = os.fsync, []

    def disk_full_after_one_file(fd):
        if os.readlink(f"/proc/self/fd/{fd}").endswith(".tmp"):
            if written:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            written.append(fd)
        real(fd)

    monkeypatch.setattr(os, "fsync", disk_full_after_one_file)
    result = cli("predict", trained_run, "seven.png", "two.png", "--save-inputs", "seen", *output)
    assert result.exit_code == 1
    assert result.stderr == (f"error: {Path('seen') / 'two.png'}: cannot write: No space left on device; free some "
                             "disk space, or write elsewhere with --save-inputs DIR\n")
    if output:
        predictions = json.loads(result.stdout)["predictions"]
        assert predictions[0].pop("input_image") == str(Path("seen") / "seven.png") and "input_image" not in \
            predictions[1]
        assert [answer["prediction"] for answer in predictions] == [answer["prediction"] for answer in expected]
    else:
        rows = [line for line in result.stdout.splitlines() if line.startswith("│ ")]
        assert [row.split("│")[2].strip() for row in rows] == [answer["prediction"] + "?" * bool(answer["doubt"])
                                                                for answer in expected]
        assert "seven.png" in rows[0] and "not saved" in rows[1], result.stdout
    assert sorted(path.name for path in (tmp_path / "seen").iterdir()) == ["seven.png"]  # no temporary file left


def test_save_inputs_never_writes_over_the_pictures_given(trained_run, sample_digits, tmp_path, cli, monkeypatch):
    pictures = tmp_path / "mine"
    pictures.mkdir()
    Image.fromarray(255 - sample_digits[0][0]).resize((90, 90)).save(pictures / "seven.png")
    kept = (pictures / "seven.png").read_bytes()
    monkeypatch.chdir(tmp_path)
    refused = cli("predict", trained_run, "mine", "--save-inputs", "mine/")
    assert refused.exit_code == 2 and refused.output == (
        "error: --save-inputs mine: holds pictures given to predict (seven.png); the 28x28 images written there "
        "could replace them: give another folder, e.g. --save-inputs seen\n")
    assert (pictures / "seven.png").read_bytes() == kept
    Image.fromarray(255 - sample_digits[0][0]).resize((90, 90)).save(pictures / "seven.jpg")
    beside = cli("predict", trained_run, "mine/seven.jpg", "--save-inputs", "mine")  # its 28x28 would be seven.png
    assert beside.exit_code == 2 and "(seven.jpg)" in beside.output
    assert (pictures / "seven.png").read_bytes() == kept
    assert cli("predict", trained_run, "mine", "--save-inputs", "seen").exit_code == 0
    assert sorted(path.name for path in (tmp_path / "seen").iterdir()) == ["seven-2.png", "seven.png"]


def test_a_batch_goes_on_past_bad_files_and_flags_doubts(trained_run, sample_digits, tmp_path, cli):
    Image.fromarray(255 - sample_digits[0][0]).resize((90, 90)).save(tmp_path / "a-digit.png")
    (tmp_path / "b-notes.png").write_text("this is not a picture")
    Image.new("L", (50, 50), 255).save(tmp_path / "c-blank.png")
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (80, 80), dtype=np.uint8)).save(tmp_path / "d-noise.png")
    result = cli("predict", trained_run, tmp_path, tmp_path / "missing.png", "--json")
    assert result.exit_code == 1 and "Traceback" not in result.output
    rows = {p["path"].rsplit("/", 1)[-1]: p for p in json.loads(result.stdout)["predictions"]}
    assert "b-notes.png: is not a picture in a format known here; give a PNG or JPEG" in rows["b-notes.png"]["error"]
    assert "no such image file" in rows["missing.png"]["error"]
    (tmp_path / "nothing.png").write_bytes(b"")
    nothing = cli("predict", trained_run, tmp_path / "nothing.png")
    assert nothing.exit_code == 1 and "nothing.png: is empty (0 bytes); give a PNG or JPEG" in nothing.output
    (tmp_path / "nothing.png").unlink()
    assert rows["c-blank.png"]["doubt"] == "blank" and rows["c-blank.png"]["prediction"] is None
    assert rows["d-noise.png"]["doubt"] == "no single digit" and rows["a-digit.png"]["prediction"] is not None
    assert rows["d-noise.png"]["prediction"] is None and rows["d-noise.png"]["top"] == []  # no digit to classify
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("a folder without pictures")
    empty = cli("predict", trained_run, tmp_path / "notes")
    assert empty.exit_code == 1 and "a folder with no pictures in it" in empty.output
    digit, blank = tmp_path / "a-digit.png", tmp_path / "c-blank.png"
    assert cli("predict", trained_run, digit, blank).exit_code == 0  # doubts are flagged, not failing
    assert cli("predict", trained_run, digit, blank, "--fail-on-doubt").exit_code == 3
    doubtful = cli("predict", trained_run, digit, "--min-confidence", "1", "--json")
    guess = json.loads(doubtful.output)["predictions"][0]
    assert guess["doubt"] == "low confidence"
    shown = cli("predict", trained_run, digit, "--min-confidence", "1").output  # the table marks the guess
    assert f" {guess['prediction']}? " in shown and "?: a guess, for the reason in the doubt column" in shown
    assert "?" not in cli("predict", trained_run, digit, "--min-confidence", "0").output
    table = cli("predict", trained_run, tmp_path)
    assert "no single digit" in table.output and "blank" in table.output and table.output.count("error:") == 1
    # what each doubt in the table means, and what to do about it, under the table
    assert "blank: no digit found:" in table.output and "crop closer" in table.output
    assert "no single digit: several pieces of ink" in table.output and "crop to one digit" in table.output
    assert cli("predict", tmp_path / "norun", digit).exit_code == 2
    swapped = cli("predict", digit, trained_run)  # the picture first: a swap of the arguments, said as such
    assert swapped.exit_code == 2 and f"mnistcnn predict RUN {digit}" in swapped.output
    best = Path(trained_run) / "checkpoints" / "best.npz"
    chosen = cli("predict", best, digit, "--checkpoint", "last")  # a file is the choice: --checkpoint is refused
    assert chosen.exit_code == 2 and "is a checkpoint file, not a run directory" in chosen.output
    assert cli("predict", best, digit).exit_code == 0 and cli("predict", trained_run, digit, "--checkpoint",
                                                                  "last").exit_code == 0
    assert all(f"{code} " in cli("predict", "--help").output for code in (0, 1, 2, 3))


def _png_header(width, height):
    """A PNG's signature and header claiming ``width`` x ``height`` pixels, and no pixels."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))


def test_large_pictures_are_capped_by_their_header_and_reduced_before_decoding(trained_run, tmp_path, cli):
    # 400 megapixels, and 180 (over Pillow's own hard limit, under the old cap), never decoded
    for name, side in (("huge.png", 20000), ("large.png", 13420)):
        (tmp_path / name).write_bytes(_png_header(side, side))
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # Pillow's DecompressionBombWarning would fail the test
            result = cli("predict", trained_run, tmp_path / name)
        assert result.exit_code == 1 and "178 million pixels" in result.output and "damaged" not in result.output
        assert "DecompressionBomb" not in result.output
    for name in ("wide.png", "wide.jpg"):
        Image.new("RGB", (3000, 1500), (200, 190, 180)).save(tmp_path / name)
        assert max(read_grey(tmp_path / name).shape) <= READ_SIDE + READ_SIDE // 2


def test_a_folder_gives_its_pictures_whatever_the_case_of_their_suffix_and_says_the_other_files(tmp_path):
    for name in ("a.png", "B.PNG", "c.JPG", "notes.txt", ".DS_Store"):
        (tmp_path / name).write_bytes(b"")
    pictures, passed_over = expand_inputs([tmp_path])
    assert pictures == [tmp_path / "B.PNG", tmp_path / "a.png", tmp_path / "c.JPG"]
    assert passed_over == [tmp_path / "notes.txt"]  # a hidden file is the system's, not the user's


def test_a_picture_over_the_limit_but_under_pillows_own_is_refused_by_its_header(tmp_path):
    path = tmp_path / "limit.png"
    side = 13350  # 178.2 million pixels: over MAX_PIXELS, under Pillow's hard limit of 178.96 million
    assert side * side > MAX_PIXELS
    path.write_bytes(_png_header(side, side))
    with pytest.raises(PictureTooLarge, match="more than 178 million pixels, the limit"):
        read_grey(path)


def test_a_palette_picture_s_transparent_ground_reads_as_white_paper(tmp_path):
    # a GIF's transparent colour is often black: the ground is what is behind it (paper), not that colour
    picture = Image.new("P", (60, 60), 0)
    picture.putpalette([0, 0, 0] * 2)  # index 0 (transparent) and index 1 (the ink) both black
    ImageDraw.Draw(picture).line([(30, 10), (30, 50)], fill=1, width=5)
    picture.save(tmp_path / "digit.png", transparency=0)
    grey = read_grey(tmp_path / "digit.png")
    assert grey[5, 5] == 255 and grey[30, 30] == 0


def test_two_large_pieces_of_ink_are_no_single_digit_and_a_speck_beside_a_digit_is_one():
    two = np.zeros((SIDE, SIDE), np.uint8)
    two[4:24, 4:8] = 255  # a stroke of 80 pixels
    two[4:24, 18:21] = 255  # another, apart from it, of 60
    assert shape_doubt(two) == NO_SINGLE_DIGIT
    speck = np.zeros((SIDE, SIDE), np.uint8)
    speck[4:24, 4:8] = 255
    speck[26:28, 26:28] = 255  # 4 pixels
    assert shape_doubt(speck) is None


def test_a_float_picture_s_values_below_0_read_as_black(tmp_path):
    values = np.ones((40, 40), np.float32)
    values[10:30, 18:22] = -0.5  # a float picture's ink can run below 0
    Image.fromarray(values, mode="F").save(tmp_path / "float.tif")
    grey = read_grey(tmp_path / "float.tif")
    assert grey.min() == 0 and grey.max() == 255


def test_a_picture_in_doubt_for_what_it_shows_keeps_that_doubt_when_the_model_is_unsure():
    class Unsure:  # every class equally likely: under any --min-confidence above 10%
        def predict_logits(self, images, batch_size, transform):
            return np.zeros((len(images), 10), np.float32)

    digit = np.zeros((SIDE, SIDE), np.uint8)
    digit[4:24, 12:16] = 255
    prepared = [{"image": np.zeros((SIDE, SIDE), np.uint8), "doubt": BLANK},
                {"image": digit, "doubt": NO_SINGLE_DIGIT}, {"image": digit, "doubt": None}]
    classify(Unsure(), None, prepared, [str(number) for number in range(10)])
    assert [result["doubt"] for result in prepared] == [BLANK, NO_SINGLE_DIGIT, LOW_CONFIDENCE]
    assert prepared[0]["prediction"] is None and prepared[0]["top"] == []


def test_ink_over_much_of_the_picture_is_no_digit():
    # a checkerboard (a pattern, a printed page): ink over half the picture is not a digit drawn on paper
    ys, xs = np.mgrid[0:200, 0:200]
    image, doubt = prepare(np.where((ys // 25 + xs // 25) % 2 == 0, 30.0, 235.0))
    assert doubt == NO_SINGLE_DIGIT and not image.any()


# -- the measurement --------------------------------------------------------------------------
def measure(run, n=1000, min_confidence=0.5):
    """Accuracy and doubts of RUN's best checkpoint on clean MNIST test digits, on the photo-like
    set and on blank and noise pictures."""
    model, _, preprocess = load_model(f"{run}/checkpoints/best.npz")
    data = load_dataset()
    rng = np.random.default_rng(0)
    pick = rng.choice(len(data.test_labels), n, replace=False)
    digits, labels = data.test_images[pick].reshape(n, 28, 28), data.test_labels[pick]

    def answers(greys):
        prepared = [dict(zip(("image", "doubt"), prepare(grey))) for grey in greys]
        classify(model, preprocess, prepared, [str(digit) for digit in range(10)], 1, min_confidence)
        predicted = [int(result["prediction"]) if result["prediction"] is not None else -1 for result in prepared]
        return np.array(predicted), np.array([result["doubt"] is not None for result in prepared])

    for name, greys in (("clean MNIST test digits", [d.astype(np.float64) for d in digits]),
                        ("photo-like", [grey_of(photo_like(d, rng)) for d in digits])):
        predicted, flagged = answers(greys)
        print(f"{name}: accuracy {np.mean(predicted == labels):.2%}, flagged {flagged.mean():.2%}")
    for kind in ("blank", "noise"):
        _, flagged = answers([grey_of(not_a_digit(rng, kind)) for _ in range(n // 2)])
        print(f"{kind} pictures flagged: {flagged.mean():.2%}")


if __name__ == "__main__":
    measure(sys.argv[1])


def test_a_phones_orientation_tag_and_a_canvas_in_any_colour_give_the_upright_digit(sample_digits, tmp_path):
    """A photo stored sideways with the EXIF tag that turns it upright, and strokes drawn in one
    colour on a transparent canvas (white ones too, as a dark-mode canvas exports), read as the
    digit drawn cleanly does."""
    digits, _ = sample_digits
    clean = drawn_cleanly(digits[0])
    expected = prepare(clean)[0]
    upright = Image.fromarray(clean.astype(np.uint8)).convert("RGB")
    for orientation, turned in ((3, Image.Transpose.ROTATE_180), (6, Image.Transpose.ROTATE_90),
                                (8, Image.Transpose.ROTATE_270)):
        exif = Image.Exif()
        exif[0x0112] = orientation  # the turn a viewer makes to show the stored pixels upright
        path = tmp_path / f"orientation-{orientation}.jpg"
        upright.transpose(turned).save(path, exif=exif, quality=95)
        assert similarity(prepare(read_grey(path))[0], expected) > 0.95, orientation
    ink = 255 - clean  # the stroke's opacity
    for colour in ((0, 0, 0), (255, 255, 255), (40, 90, 220)):
        rgba = np.zeros(clean.shape + (4,), np.uint8)
        rgba[..., :3], rgba[..., 3] = colour, ink
        path = tmp_path / f"canvas-{colour[0]}.png"
        Image.fromarray(rgba).save(path)
        image, doubt = prepare(read_grey(path))
        assert doubt is None and similarity(image, expected) > 0.95, colour
    paper = np.dstack([clean] * 3 + [np.full(clean.shape, 255.0)]).astype(np.uint8)
    paper[:10, :10, 3] = 0  # a photo with a transparent corner keeps its own colours
    Image.fromarray(paper).save(tmp_path / "corner.png")
    assert similarity(prepare(read_grey(tmp_path / "corner.png"))[0], expected) > 0.95
    card = np.zeros((600, 600, 4), np.uint8)  # an opaque white card on transparency, a small digit on it
    card[50:550, 50:550] = 255
    card[250:350, 250:350, :3] = np.asarray(Image.fromarray(clean.astype(np.uint8)).resize((100, 100)))[..., None]
    Image.fromarray(card).save(tmp_path / "card.png")
    page = np.where(card[..., 3:] > 0, card[..., :3], 255).astype(np.uint8)  # the same, on white paper
    Image.fromarray(page).save(tmp_path / "page.png")
    assert np.array_equal(read_grey(tmp_path / "card.png"), read_grey(tmp_path / "page.png"))


def test_pictures_of_more_than_8_bits_read_as_their_8_bit_copy(sample_digits, tmp_path):
    clean = drawn_cleanly(sample_digits[0][0])
    levels = np.clip(np.rint(clean), 0, 255)
    Image.fromarray(levels.astype(np.uint8)).save(tmp_path / "8-bit.png")
    Image.fromarray((levels * 257).astype(np.uint16)).save(tmp_path / "16-bit.png")
    Image.fromarray((levels / 255).astype(np.float32), mode="F").save(tmp_path / "float.tif")
    expected = read_grey(tmp_path / "8-bit.png")
    Image.fromarray((levels * 4095 / 255).astype(np.uint16)).save(tmp_path / "12-bit.png")  # 12 bits in 16
    with_nan = (levels / 255).astype(np.float32)
    with_nan[0, 0] = np.nan  # a hole in a float picture reads as its paper, not as ink
    Image.fromarray(with_nan, mode="F").save(tmp_path / "nan.tif")
    for name in ("16-bit.png", "float.tif", "12-bit.png", "nan.tif"):
        assert Image.open(tmp_path / name).mode in ("I;16", "F")
        assert np.abs(read_grey(tmp_path / name) - expected).max() <= 1, name


def _seven(width: int, size=(800, 1000)) -> np.ndarray:
    """A 7 drawn with a pen ``width`` pixels wide on white paper, as a large photo shows it."""
    from PIL import ImageDraw

    paper = Image.new("L", size, 235)
    ImageDraw.Draw(paper).line([(250, 300), (550, 300), (380, 750)], fill=30, width=width, joint="curve")
    return np.asarray(paper, dtype=np.float64)


def test_a_ballpoint_pens_thin_strokes_are_widened_as_a_markers_are_seen():
    marker, marker_doubt = prepare(_seven(60))
    thin, thin_doubt = prepare(_seven(5))
    assert marker_doubt is None and thin_doubt is None
    assert similarity(thin, marker) > 0.85
    assert thin.max() == 255 and (thin > 128).sum() >= 0.6 * (marker > 128).sum()  # not faint, not broken


def test_a_thin_pen_on_a_large_unevenly_lit_page_gives_the_digit():
    """Strokes that cover under 1% of the picture, on paper lit 40 grey levels brighter on one side."""
    def page(levels):
        light = np.linspace(200 - levels / 2, 200 + levels / 2, 1500)
        grey = Image.fromarray(np.tile(light, (2000, 1)).astype(np.uint8))
        ImageDraw.Draw(grey).line([(525, 650), (975, 650), (712, 1325)], fill=30, width=10)
        return np.asarray(grey, dtype=np.float64)

    evenly, evenly_doubt = prepare(page(0))
    unevenly, unevenly_doubt = prepare(page(40))
    assert evenly_doubt is None and unevenly_doubt is None
    assert similarity(unevenly, evenly) > 0.9


def test_a_faint_digit_beside_a_glint_gives_the_digit():
    """A pencil 7 only 30 grey levels darker than the paper, and a small bright reflection beside it:
    the reflection reaches far out of the paper but covers little of it, and it is not the ink."""
    def page(glint):
        grey = Image.new("L", (512, 512), 130)
        draw = ImageDraw.Draw(grey)
        draw.line([(150, 140), (360, 140), (230, 400)], fill=100, width=14)
        if glint:
            draw.ellipse([400, 400, 424, 424], fill=255)
        return np.asarray(grey, dtype=np.float64) + np.random.default_rng(0).normal(0, 2, (512, 512))

    plain, plain_doubt = prepare(page(glint=False))
    glinted, glinted_doubt = prepare(page(glint=True))
    assert plain_doubt is None and glinted_doubt is None
    assert similarity(glinted, plain) > 0.9


def _glossy_page(axes, angle, centre, level, edge, shape=(400, 300)):
    """A blank glossy page: paper lit 30 grey levels brighter to the right, noise, and a glint 70 levels
    bright (clipped at white), an ellipse of semi-axes ``axes`` turned by ``angle`` whose edge fades as
    a Gaussian ``edge`` pixels wide."""
    ys, xs = np.mgrid[0:shape[0], 0:shape[1]].astype(np.float64)
    page = level + 30 * (xs / shape[1] - 0.5) + np.random.default_rng(1).normal(0, 3, shape)
    along = (xs - centre[1]) * np.cos(angle) + (ys - centre[0]) * np.sin(angle)
    across = (ys - centre[0]) * np.cos(angle) - (xs - centre[1]) * np.sin(angle)
    outside = np.hypot(along / axes[0], across / axes[1]) - 1  # 0 on the ellipse's outline
    glint = 70 * np.exp(-(np.maximum(outside, 0) * min(axes) / edge) ** 2 / 2)
    return np.clip(np.rint(page + glint), 0, 255)


def test_a_glint_on_a_blank_glossy_page_is_blank(sample_digits):
    """On light paper a glint is no light stroke (light ink needs a dark ground), and the dark halo
    that the paper's estimate leaves around a wide one is no dark stroke either; chalk on a grey
    board is still light ink."""
    glints = (((40, 12), 0.3, (280, 150), 210, 4), ((25, 8), 1.2, (300, 90), 190, 12),
              ((30, 30), 0.0, (200, 150), 210, 4), ((45, 35), 0.8, (220, 160), 190, 12),
              ((60, 20), -0.5, (120, 170), 210, 12), ((50, 15), 2.0, (150, 200), 190, 4))
    for axes, angle, centre, level, edge in glints:
        assert prepare(_glossy_page(axes, angle, centre, level, edge))[1] == "blank", (axes, level, edge)
    clean = drawn_cleanly(sample_digits[0][0])
    board = 140 + 30 * (np.arange(200) / 200 - 0.5) + np.random.default_rng(2).normal(0, 4, (200, 200))
    chalk = board + (255 - clean) / 255 * (235 - board)
    image, doubt = prepare(chalk)
    assert doubt is None and similarity(image, prepare(clean)[0]) > 0.9


def test_a_table_or_the_pages_edge_in_the_photo_is_not_taken_for_the_digit(sample_digits):
    clean = drawn_cleanly(sample_digits[0][0])
    expected = prepare(clean)[0]
    for side in ("bottom", "left"):
        photo = np.full((400, 300), 225.0)
        photo[100:300, 50:250] = clean  # the 200 px digit on the page
        if side == "bottom":
            photo[-25:] = 60.0  # the table below the page
        else:
            photo[:, :15] = 60.0
        image, doubt = prepare(photo)
        assert doubt is None and similarity(image, expected) > 0.9, side


def test_the_stroke_width_limits_fit_mnists_own_digits(mnist):
    def relative_width(digit):
        mask = digit[:, :, 0] > 96
        rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
        box = mask[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
        return stroke_width(box) / max(box.shape)

    widths = np.array([relative_width(digit) for digit in mnist.test_images])
    assert widths.max() < MAX_STROKE  # no MNIST digit is a blot
    assert 0.9 * MIN_STROKE < np.median(widths) < 1.3 * MIN_STROKE  # widening stops at a typical digit's width


def test_a_blot_such_as_a_single_tap_on_a_pad_is_no_digit():
    ys, xs = np.mgrid[0:280, 0:280]
    tap = np.where((ys - 140) ** 2 + (xs - 140) ** 2 <= 10 ** 2, 255.0, 0.0)  # the pen's dot on serve's dark pad
    image, doubt = prepare(tap)
    assert doubt == "no single digit" and image.any()


def test_a_shadows_sharp_edge_across_the_digit_seldom_changes_the_answer_unflagged(sample_digits, trained_run):
    ys, xs = np.mgrid[0:400, 0:300]
    clean, shadowed = [], []
    for digit in sample_digits[0][:20]:
        for slope, offset in ((0.4, 60), (0.0, 150), (-0.5, 300)):  # edges slanting across page and digit
            photo = np.full((400, 300), 225.0)
            photo[100:300, 50:250] = drawn_cleanly(digit)
            photo[xs > slope * ys + offset] *= 0.45
            clean.append(prepare(drawn_cleanly(digit))[0])
            shadowed.append(prepare(photo))
    same = engine_predictions(trained_run, np.stack(clean)).argmax(1) == \
        engine_predictions(trained_run, np.stack([image for image, _ in shadowed])).argmax(1)
    flagged = np.array([doubt is not None for _, doubt in shadowed])
    assert same.mean() >= 0.5 and (~same & ~flagged).mean() <= 0.15, (same.mean(), (~same & ~flagged).mean())


def _phone_photo_of_a_seven(box, pen, ink, shadow, corner="top left", blur=1.5):
    """A 1600x1200 phone photo (seeded) of a 7 drawn in ``box`` (left, top, right, bottom) with a pen
    ``pen`` px wide in ``ink`` (RGB) on warm paper lit unevenly, with grain and a hard shadow ``shadow``
    grey levels deep cast into ``corner``: a wedge a quarter of the photo wide at one edge, narrowing
    to the other; out of focus by a Gaussian ``blur`` (its radius), or sharp."""
    from PIL import ImageFilter

    ys, xs = np.mgrid[0:1200, 0:1600].astype(np.float64)
    light = 210 + 35 * xs / 1600 - 25 * ys / 1200 + np.random.default_rng(0).normal(0, 6, xs.shape)
    across = xs if "left" in corner else 1599 - xs
    down = ys if "top" in corner else 1199 - ys
    grey = np.clip(light - shadow * (across + 0.3 * down < 400), 0, 255)
    picture = Image.fromarray(np.stack([grey, 0.97 * grey, 0.9 * grey], axis=-1).astype(np.uint8))
    left, top, right, bottom = box
    draw = ImageDraw.Draw(picture)
    draw.line([(left, top), (right, top), (left + 0.35 * (right - left), bottom)], fill=ink, width=pen,
              joint="curve")
    middle = (top + bottom) / 2
    draw.line([(left + 0.3 * (right - left), middle), (left + 0.8 * (right - left), middle)], fill=ink, width=pen)
    return grey_of(np.asarray(picture.filter(ImageFilter.GaussianBlur(blur)) if blur else picture))


def test_a_coloured_ink_digit_with_a_hard_shadow_into_a_corner_gives_the_digit():
    """What is left of the shadow's edge where it meets the picture's border is dropped as ink at the
    edge; fainter than the strokes of coloured ink, it must not make the digit seem not to stand out
    of the paper. The 7 comes out as it does without the shadow."""
    for pen, ink, corner in ((14, (30, 40, 140), "top left"), (14, (30, 40, 140), "bottom right"),
                             (9, (20, 20, 20), "top left")):
        unshadowed = prepare(_phone_photo_of_a_seven((600, 350, 1000, 900), pen, ink, shadow=0, corner=corner))[0]
        image, doubt = prepare(_phone_photo_of_a_seven((600, 350, 1000, 900), pen, ink, shadow=50, corner=corner))
        assert doubt is None and similarity(image, unshadowed) > 0.9, (pen, ink, corner, doubt)


def test_a_small_digit_under_a_shadow_stronger_than_its_ink_still_gives_the_digit(trained_run):
    """A sharp 7 a twelfth of the photo's height, its pen's strokes under a pixel wide once reduced:
    the shadow's remnant at the edge is stronger than they are and sets the threshold between ink and
    paper, which the digit's strokes alone do not pass by MIN_SEPARATION. Framed, with the shadow or
    without it (where it was lost in the paper: blank), it is the 7 drawn six times as large: alike,
    and the same answer from the model."""
    drawn_large = prepare(_phone_photo_of_a_seven((500, 250, 860, 850), 30, (20, 20, 20), shadow=0, blur=0))[0]
    expected = engine_predictions(trained_run, drawn_large[None]).argmax()
    for ink, corner, shadow in (((20, 20, 20), "top left", 50), ((30, 40, 140), "bottom right", 50),
                                ((20, 20, 20), "top left", 0)):
        image, doubt = prepare(_phone_photo_of_a_seven((780, 560, 840, 660), 5, ink, shadow=shadow, corner=corner,
                                                       blur=0))
        likeness = similarity(image, drawn_large)
        assert doubt is None and likeness > 0.85 and engine_predictions(trained_run, image[None]).argmax() == \
            expected, (ink, corner, shadow, doubt, likeness)


def _page_photo(width, height, ink, centre, rng, specks=(), quality=85):
    """A phone's JPEG (``width`` x ``height``, as Pillow opens it) of a page with a small digit: paper lit
    50 grey levels brighter to the right, a soft shadow (a hand's, 60 levels deep) over its lower left,
    texture, grain and noise; ``ink`` (float 0..1, the digit's opacity, small) laid as black ink with its
    centre at ``centre`` (row, column), and a round speck of dirt of radius r at each (row, column, r)."""
    ys = np.linspace(0, 1, height, dtype=np.float32)[:, None]
    xs = np.linspace(0, 1, width, dtype=np.float32)[None, :]
    texture = np.asarray(Image.fromarray(rng.uniform(-6, 6, (24, 24)).astype(np.float32), mode="F").resize(
        (width, height), Image.BICUBIC))
    page = 205 + 50 * (xs - 0.5) - 25 * (ys - 0.5) - 60 / (1 + np.exp(((xs - 0.6) - (ys - 0.7)) * 20)) + texture
    page += rng.normal(0, 4, (height, width)).astype(np.float32)
    top, left = centre[0] - ink.shape[0] // 2, centre[1] - ink.shape[1] // 2
    region = page[top:top + ink.shape[0], left:left + ink.shape[1]]
    region += ink * (40 - region)
    for row, col, radius in specks:
        near = (np.arange(height)[:, None] - row) ** 2 + (np.arange(width)[None, :] - col) ** 2 <= radius ** 2
        page[near] = 50
    stored = io.BytesIO()
    Image.fromarray(np.clip(page, 0, 255).astype(np.uint8)).save(stored, "JPEG", quality=quality)
    return stored


def test_a_small_digit_in_a_large_phone_photo_is_read_as_the_digit_drawn_large(sample_digits, trained_run):
    """A 3000x4000 photo of a page with an MNIST digit written 200 pixels tall in it, uneven light, a
    soft shadow, JPEG: the digit covers a thousandth of the picture; it was read from a dozen pixels,
    or lost in the paper's grain (blank). The digit is framed, and read as the same digit drawn large: the
    model gives the same answer, and the images are as alike as a photo's and a clean drawing's are."""
    digits, labels = sample_digits[0][:20], sample_digits[1][:20]
    drawn_large = np.stack([prepare(drawn_cleanly(digit))[0] for digit in digits])
    logits = engine_predictions(trained_run, drawn_large)
    margins = np.where(logits.argmax(axis=1) == labels, logits.max(axis=1) - np.sort(logits, axis=1)[:, -2], -np.inf)
    index = int(np.argmax(margins))  # the digit the tests' small model reads most clearly when drawn large
    ink = np.asarray(Image.fromarray(digits[index]).resize((280, 280), Image.BICUBIC), dtype=np.float32) / 255
    photo = _page_photo(3000, 4000, ink, (2000, 1500), np.random.default_rng(0))
    image, doubt = prepare(read_grey(photo, name="page.jpg"))
    likeness = similarity(image, drawn_large[index])
    assert doubt is None and likeness > 0.8 and engine_predictions(trained_run, image[None]).argmax() == \
        labels[index], (doubt, likeness)


def test_a_small_digit_is_framed_thin_near_the_pages_edge_or_beside_a_speck_of_dirt():
    """Photos read at 2000x1500, as a phone's 4000x3000 JPEG is, of a 7 100 pixels tall: drawn with a
    thin pen (2 pixels), near the picture's edge, and with specks of dirt on the page, far from it or
    beside it. Each is the 7 the same pen draws large, the specks left out."""
    def seven(pen, height=100):
        picture = Image.new("F", (height, height), 0.0)
        ImageDraw.Draw(picture).line([(20, 2), (80, 2), (40, height - 3)], fill=1.0, width=pen, joint="curve")
        ImageDraw.Draw(picture).line([(35, height // 2), (70, height // 2)], fill=1.0, width=pen)
        return np.asarray(picture)

    for pen, centre, specks in ((2, (1000, 750), ()), (5, (1000, 70), ()), (5, (70, 750), ()),
                                (5, (1000, 750), ((500, 1200, 8), (1600, 300, 4)))):
        ink = seven(pen)
        drawn_large = prepare(255 - 215 * np.asarray(Image.fromarray(ink).resize((400, 400))))[0]
        image, doubt = prepare(read_grey(_page_photo(1500, 2000, ink, centre, np.random.default_rng(pen), specks),
                                         name="page.jpg"))
        assert doubt is None and similarity(image, drawn_large) > 0.9, (pen, centre, specks, doubt,
                                                                        similarity(image, drawn_large))


def test_two_small_digits_apart_on_a_large_page_are_no_single_digit():
    """Two 7s 200 pixels apart on a photo read at 2000x1500, 100 pixels tall, or 100 and 85: each is about as
    large as the other, so neither is framed alone. They were read as blank (crop closer); they are no single
    digit."""
    for second in (100, 85):
        ink = Image.new("F", (400, 100), 0.0)
        for left, height in ((0, 100), (300, second)):
            ImageDraw.Draw(ink).line([(left + 20, 2), (left + 80, 2), (left + 40, height - 3)], fill=1.0, width=5)
        photo = _page_photo(1500, 2000, np.asarray(ink), (1000, 750), np.random.default_rng(3))
        assert prepare(read_grey(photo, name="page.jpg"))[1] == NO_SINGLE_DIGIT, second


def test_a_pen_on_the_table_reaching_in_from_any_edge_is_not_framed_with_a_small_digit():
    """A 7 100 pixels tall on a photo read at 2000x1500, and a pen lying on the table that reaches in from one
    edge of the picture, as long as the 7 is wide: passed over at every edge, the 7 is read as it is alone."""
    ink = Image.new("F", (100, 100), 0.0)
    ImageDraw.Draw(ink).line([(20, 2), (80, 2), (40, 97)], fill=1.0, width=5, joint="curve")
    ImageDraw.Draw(ink).line([(35, 50), (70, 50)], fill=1.0, width=5)
    alone = read_grey(_page_photo(1500, 2000, np.asarray(ink), (1000, 750), np.random.default_rng(5)), name="page.jpg")
    expected = prepare(alone)[0]
    for side, pen in (("left", [(0, 900), (120, 1000)]), ("top", [(700, 0), (800, 120)]),
                      ("right", [(1499, 900), (1380, 1000)]), ("bottom", [(700, 1999), (800, 1880)])):
        picture = Image.fromarray(alone.astype(np.uint8))
        ImageDraw.Draw(picture).line(pen, fill=40, width=6)
        image, doubt = prepare(np.asarray(picture, dtype=np.float64))
        assert doubt is None and similarity(image, expected) > 0.95, (side, doubt)


def test_a_short_stroke_apart_from_the_digit_is_kept_not_taken_for_a_speck():
    """A 7 drawn on serve's pad with its crossbar apart (a sixth of its ink): small beside the 7 but no dot, it
    is kept, and shows in the image."""
    def pad(strokes):
        picture = Image.new("L", (280, 280), 0)
        for stroke in strokes:
            ImageDraw.Draw(picture).line(stroke, fill=255, width=20, joint="curve")
        return np.asarray(picture, dtype=np.float64)

    seven = [(30, 40), (250, 40), (120, 260)]
    crossed, doubt = prepare(pad([seven, [(70, 150), (130, 150)]]))
    assert doubt is None and (crossed.astype(int) - prepare(pad([seven]))[0] > 128).sum() >= 20


def test_a_speck_of_dirt_beside_the_digit_is_left_out_of_it():
    """A dot of dirt near a 7 (a pen 12 pixels wide, the dots 6 to 24 across) was fitted into the 20x20
    box with it: the 7 came out smaller and off centre. It is left out: the 7 is as it is alone."""
    def page(dot=None, radius=0):
        picture = Image.new("L", (300, 400), 225)
        draw = ImageDraw.Draw(picture)
        draw.line([(80, 100), (200, 100), (110, 300)], fill=30, width=12, joint="curve")
        if dot:
            draw.ellipse([dot[0] - radius, dot[1] - radius, dot[0] + radius, dot[1] + radius], fill=40)
        return np.asarray(picture, dtype=np.float64) + np.random.default_rng(0).normal(0, 3, (400, 300))

    alone = prepare(page())[0]
    for dot, radius in (((240, 200), 6), ((250, 330), 4), ((60, 320), 8), ((240, 60), 3), ((160, 350), 6),
                        ((250, 250), 12), ((95, 220), 6)):  # the last within the 7's box: its ink goes too
        image, doubt = prepare(page(dot, radius))
        assert doubt is None and similarity(image, alone) > 0.95, (dot, radius, similarity(image, alone))
    # a blank page whose grain is read as specks beside a larger patch: were they left out before the
    # ink is judged, the patch alone would stand out as a digit
    assert prepare(grey_of(not_a_digit(np.random.default_rng(142), "blank")))[1] == BLANK


def test_a_digits_own_stroke_that_ends_at_the_edge_is_kept():
    from PIL import ImageDraw

    def pad(strokes, shift=0):  # serve's pad: white strokes 20 px wide on black, 280 px
        picture = Image.new("L", (280, 280), 0)
        for stroke in strokes:
            ImageDraw.Draw(picture).line([(x, y + shift) for x, y in stroke], fill=255, width=20, joint="curve")
        return np.asarray(picture, dtype=np.float64)

    five = [[(110, 30), (220, 30)], [(95, 55), (85, 130), (200, 135), (215, 230), (90, 269)]]  # its bar apart
    seven = [[(20, 10), (260, 10), (130, 270)], [(70, 140), (150, 140)]]  # a dash across, apart
    for strokes, shift in ((five, 10), (seven, -10)):  # to the bottom edge, and off the top edge
        inside, at_the_edge = prepare(pad(strokes)), prepare(pad(strokes, shift))
        assert at_the_edge[1] is None and similarity(at_the_edge[0], inside[0]) > 0.9


def test_large_palette_and_one_bit_pictures_are_read_reduced(sample_digits):
    digit = Image.fromarray(255 - sample_digits[0][0]).resize((2100, 2100))  # a 300 dpi scan's size
    expected = prepare(np.asarray(digit.convert("1").convert("L"), dtype=np.float64))[0]
    for mode, kind in (("P", "GIF"), ("1", "PNG"), ("1", "TIFF")):
        stored = io.BytesIO()
        digit.convert(mode).save(stored, kind)
        grey = read_grey(io.BytesIO(stored.getvalue()), name=f"{mode} {kind}")
        assert max(grey.shape) <= 2 * READ_SIDE and similarity(prepare(grey)[0], expected) > 0.9, (mode, kind)


def test_in_a_terminal_the_pictures_as_seen_come_side_by_side_and_the_answers_last(trained_run, sample_digits,
                                                                                    tmp_path, monkeypatch, cli):
    monkeypatch.chdir(tmp_path)
    for i, image in enumerate(sample_digits[0][:6]):
        Image.fromarray(image).save(tmp_path / f"digit{i}.png")
    monkeypatch.setattr(console, "_force_terminal", True)
    monkeypatch.setattr(console, "_width", 100)  # three 28-column previews a row
    result = cli("predict", trained_run, ".")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    seen = lines.index("as the model sees them:")
    table = next(i for i, line in enumerate(lines) if line.strip().startswith("predictions"))  # its title
    assert seen < table < seen + 3 * (SIDE // 2 + 2), result.output  # two rows of three, not six stacked
    answers = json.loads(cli("predict", trained_run, ".", "--json").output)["predictions"]
    label = answers[0]["prediction"] + "?" * bool(answers[0]["doubt"])
    assert lines[seen + 1].startswith(f"{label} digit0.png"), result.output  # each picture labelled with its answer
    end = max(i for i, line in enumerate(lines) if line.startswith("└"))  # the table's bottom border
    assert all(":" in line for line in lines[end + 1:] if line), result.output  # then only what the doubts mean


def test_the_files_passed_over_are_said_in_one_line(trained_run, tmp_path, cli):
    (tmp_path / "IMG_0001.HEIC").write_text("a phone's photo, in a format not read here")
    result = cli("predict", trained_run, tmp_path)  # off a terminal: a line 200 columns wide is not cut for grep
    said = next(line for line in result.output.splitlines() if line.startswith("passed over"))
    assert said.startswith("passed over 1 file whose name is not a picture's (IMG_0001.HEIC); predict reads") and \
        said.endswith("as JPEG or PNG"), result.output


def test_a_glob_that_matches_files_but_no_picture_is_not_said_to_match_nothing(trained_run, tmp_path, cli):
    (tmp_path / "seven.svg").write_text("<svg/>")
    result = cli("predict", trained_run, tmp_path / "*.svg")
    assert result.exit_code == 1 and "no file matches" not in result.output, result.output
    assert f"error: {tmp_path / '*.svg'}: matches no picture (.bmp, .gif" in result.output, result.output


def test_the_tables_title_keeps_the_checkpoints_path_on_one_line(trained_run, sample_digits, tmp_path, cli,
                                                                  monkeypatch):
    """Off a terminal (lines 200 columns wide, for grep) a table of one short picture name is
    narrower than its title: the checkpoint's path was folded into it ('.../checkpoints/best.' and
    'npz)' on the next line)."""
    monkeypatch.chdir(tmp_path)
    Image.fromarray(sample_digits[0][0]).save("7.png")
    result = cli("predict", trained_run, "7.png")
    assert result.exit_code == 0, result.output
    assert f"predictions ({trained_run / 'checkpoints' / 'best.npz'})" in result.output, result.output


def test_predict_target_makes_the_save_folder_before_it_predicts(trained_run, sample_digits, tmp_path, monkeypatch):
    import mnistcnn.predict as predict_module

    pictures = tmp_path / "mine"
    pictures.mkdir()
    for i, image in enumerate(sample_digits[0][:2]):
        Image.fromarray(image).save(pictures / f"digit{i}.png")
    (pictures / "notes.txt").write_text("not a picture")
    path, results, passed_over = predict_module.predict_target(trained_run, [pictures], "last", top=1,
                                                               save_folder=tmp_path / "seen")
    assert path == trained_run / "checkpoints" / "last.npz" and (tmp_path / "seen").is_dir()
    assert [result["path"] for result in results] == [str(pictures / "digit0.png"), str(pictures / "digit1.png")]
    assert all(len(result["top"]) == 1 for result in results) and passed_over == [pictures / "notes.txt"]
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setattr(predict_module, "load_classifier", lambda path: pytest.fail("loaded before the folder"))
    with pytest.raises(UsageError, match="--save-inputs"):
        predict_module.predict_target(trained_run, [pictures], save_folder=blocker / "seen")


def test_a_quoted_glob_from_home_and_a_picture_misnamed_are_found(trained_run, sample_digits, tmp_path, cli,
                                                                  monkeypatch):
    """'~/scans/*.png' in quotes, as the help's example quotes a glob, reaches predict with its ~
    unexpanded: it matched nothing. A picture's name a slip away (.jpeg for .jpg) is told the one there."""
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "scans").mkdir()
    Image.fromarray(sample_digits[0][0]).save(tmp_path / "scans" / "seven.jpg")
    found = cli("predict", trained_run, "~/scans/*.jpg", "--json")
    assert found.exit_code == 0 and "seven.jpg" in found.output, found.output
    misnamed = cli("predict", trained_run, tmp_path / "scans" / "seven.jpeg")
    assert misnamed.exit_code == 1, misnamed.output
    assert f"seven.jpeg: no such image file; did you mean {tmp_path / 'scans' / 'seven.jpg'}?" in misnamed.output
