"""Classify a person's own digit pictures: turn any PNG or JPEG into an MNIST-style 28x28 image
the way MNIST itself was made, then run the model, and say when not to trust the answer.

MNIST's digits are white on black, size-normalised to fit a 20x20 box (keeping the aspect
ratio, anti-aliased), and placed in a 28x28 field so that their centre of mass is at the
centre. A photo needs the same treatment, or the model sees something it never learnt: first
the paper goes (uneven light, shadows, grey paper, ink of any colour, either polarity), then the
digit is cropped, fitted and centred.
"""
from __future__ import annotations

import difflib
import glob
import warnings
from pathlib import Path

import numpy as np

from . import config as cfg
from .atomic import OutputOption, atomic_writer, make_folder, written_to
from .errors import DataError, UsageError
from .engine.losses import softmax
from .runs import PICTURE_SUFFIXES, is_onnx_file, resolve_checkpoint

SIDE, BOX = 28, 20
ONE_COLOUR = 24  # grey levels within which a picture shows nothing
# a 12000x12000 photo passes; a decompression bomb does not. Under Pillow's own hard limit
# (twice its MAX_IMAGE_PIXELS, 178,956,970), which refuses a picture before ours is checked.
MAX_PIXELS = 178_000_000
READ_SIDE = 1024  # pictures are reduced (by Pillow, or by the JPEG decoder) to about this side
WORK_SIDE = 256  # the side the background is removed at: plenty for a 20x20 box
GRID = 32  # the background is estimated on a grid of about this side ...
WINDOW = 9  # ... over windows of this many cells, wider than any stroke
MIN_CONFIDENCE = 0.5
TOP = 3  # classes shown with their probabilities
# Why a prediction is in doubt, in the words the CLI and the page show
BLANK, NO_SINGLE_DIGIT, LOW_CONFIDENCE = "blank", "no single digit", "low confidence"
DOUBT_ADVICE = {  # what each doubt means to the person who took the picture, and what to do
    BLANK: "no digit found: a digit very small in the picture, or faint, can be lost in the paper; crop closer to it",
    NO_SINGLE_DIGIT: "several pieces of ink, a blot, a digit cut by the edge or one very small in the picture; crop to "
                     "one digit with paper around it",
    LOW_CONFIDENCE: "the model's best class is under --min-confidence",
}
DRAWN_ADVICE = {  # the same for a digit drawn on mnistcnn serve's pad, where nothing is cropped or framed
    BLANK: "draw a digit on the pad, or upload a picture of one",
    NO_SINGLE_DIGIT: "a dot, a blot or several separate pieces of ink; draw one digit, in strokes",
    LOW_CONFIDENCE: f"no class reaches {MIN_CONFIDENCE:.0%}: the model cannot tell which digit this is",
}
MIN_SEPARATION = 1.6  # the strokes' median over the Otsu threshold between ink and paper
MAX_COVERAGE = 0.25  # of the picture, by the ink
THIN_INK = 4  # ink under 1% of the picture: its 0.1% tail this many times further out than the 1% tails
PAPER_TAIL = 8  # grey levels: the paper's light and grain keep its 1% tails within this; ink's reach further
LIGHT_PAPER = 160  # grey levels: a ground this light holds dark ink only; a board's or a screen's is darker
MIN_CONTRAST = 40  # grey levels between ink and paper, below which a picture without a digit is blank
MIN_INSIDE = 0.1  # of the ink: away from the picture's edge, enough to be the digit
NEAR = 2  # stroke widths: ink at the picture's edge this close to the rest is the digit's own
# Stroke widths as a share of the digit's longer side (stroke_width over the crop), set by MNIST's
# own digits (tests/test_predict.py holds them to it): about as thin as most, wider than any.
MIN_STROKE = 0.1  # thinner strokes are widened to this, by two pixels or more
MAX_STROKE = 0.32  # a blot (a single tap on a pad), not strokes: no digit
SHADOW_WINDOW = 1.5  # stroke widths: the window that tells a stroke from a step in the paper's light
SHADOW_GATE = 0.15  # of full ink: how much less ink the closing must see for a band to be a shadow's
MIN_VALLEY = 0.6  # of the strokes' ink: how much of it the closing must see for the picture to hold strokes
# A digit small in a large photo is framed as a person would crop it: looked for at up to READ_SIDE, as
# ink in valleys narrower than 1/FRAME_CELLS of the picture's longer side, joined through cells of that side.
FRAME_CELLS = 64
GRAIN = 4  # times the paper's grain (the valleys' median depth): how far a stroke's ink stands out of it
FRAME_SHARE = 0.25  # of the picture's longer side: a digit up to this is framed, a larger one already is
SECOND_PIECE = 0.25  # of the largest piece of ink: a second piece over this makes the picture no single digit
SPECK = 3  # its own widths: a piece of ink no longer than this beside the digit is a dot of dirt, no stroke


def expand_inputs(arguments) -> tuple[list[Path], list[Path]]:
    """Files as given, folders and globs as the pictures in them or matching them (sorted, by
    their suffixes); a name that matches nothing, or a folder without pictures, stays in the list,
    to be reported as unreadable. Also the files of those folders and globs passed over, whose
    names are not pictures' (notes.txt, a phone's .HEIC): said, so that none goes missing without
    a word; hidden files (.DS_Store) are not."""
    paths, passed_over = [], []
    for argument in map(str, arguments):
        path = Path(argument)
        if argument.startswith("~") and not path.exists():  # a glob in quotes, as the help shows: no shell expands ~
            path = path.expanduser()
            argument = str(path)
        if path.is_dir() or (not path.exists() and glob.has_magic(argument)):
            found = sorted(p for p in (path.iterdir() if path.is_dir() else map(Path, glob.glob(argument)))
                           if p.is_file())
            pictures = [p for p in found if p.suffix.lower() in PICTURE_SUFFIXES]
            paths += pictures or [path]
            passed_over += [p for p in found if p not in pictures and not p.name.startswith(".")]
        else:
            paths.append(path)
    return paths, passed_over


def picture_like(path: Path) -> str:
    """The picture beside ``path`` named nearest to it, as a question ("; did you mean photos/7.jpg?"),
    for a slip of its name (.jpeg for .jpg, a letter); "" when none is near."""
    if not path.parent.is_dir():
        return ""
    pictures = [p.name for p in path.parent.iterdir() if p.suffix.lower() in PICTURE_SUFFIXES]
    near = difflib.get_close_matches(path.name, pictures, n=1, cutoff=0.8)
    return f"; did you mean {path.parent / near[0]}?" if near else ""


class PictureTooLarge(DataError):
    """A picture with more pixels than the limit, refused by its header."""


class NotAPicture(DataError):
    """Bytes that no picture format known to Pillow reads (a text file, a form's fields)."""


def read_grey(path, max_pixels: int = MAX_PIXELS, name: str | None = None, formats=None) -> np.ndarray:
    """A picture file (a path, or a binary file object such as ``io.BytesIO``, which messages call
    ``name``) as a float array of grey levels 0..255 (transparent parts count as white),
    reduced to about READ_SIDE on its longer side before any float copy is made; ``formats``
    (Pillow's names) limits the parsers tried, else all that Pillow has."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    if name is None:
        path = name = Path(path)
        suffixes = ", ".join(sorted(PICTURE_SUFFIXES))
        if path.is_dir():
            raise UsageError(f"{path}: a folder with no pictures in it ({suffixes})")
        if not path.is_file() and not glob.has_magic(str(path)):
            raise UsageError(f"{path}: no such image file{picture_like(path)}")
        if not path.is_file():  # a glob: its files, if any, are passed over by their names
            raise UsageError(f"{path}: matches no picture ({suffixes})" if glob.glob(str(path)) else
                             f"{path}: no file matches")
    too_large = (f"{name}: the picture has more than {max_pixels / 1e6:.0f} million pixels, the limit; "
                 "scale it down (a digit needs a few hundred pixels a side) and try again")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the limit below replaces it
            with Image.open(path, formats=formats) as image:  # reads the header only
                width, height = image.size
                if width * height > max_pixels:
                    raise PictureTooLarge(too_large)
                image.draft("L", (max(1, width * READ_SIDE // max(width, height)), 1))  # JPEG: decode reduced
                image.load()
                if image.mode.startswith("I;16"):
                    image = image.convert("I")  # Pillow reduces 32-bit integers and floats, not 16-bit
                elif image.mode in ("1", "P"):  # nor 1-bit or palette pictures (a scan, a GIF)
                    image = image.convert("RGBA" if "transparency" in image.info else "L")
                factor = max(image.size) // READ_SIDE
                if factor > 1:  # box-average before the float copy, which is made of the reduced picture
                    image = image.reduce(factor)
                image = ImageOps.exif_transpose(image)  # upright, as a phone's photo is shown; a copy
                if image.mode in ("RGBA", "LA", "PA"):
                    grey = _flattened(image.convert("RGBA"))
                elif image.mode in ("I", "F"):
                    grey = _eight_bits(np.asarray(image, dtype=np.float64))
                else:
                    grey = np.asarray(image.convert("L"), dtype=np.float64)
    except Image.DecompressionBombError:  # Pillow's own, higher limit, checked when opening
        raise PictureTooLarge(too_large) from None
    except UnidentifiedImageError:
        empty = isinstance(path, Path) and path.stat().st_size == 0
        what = "is empty (0 bytes)" if empty else "is not a picture in a format known here"
        takes = f"give a picture of a digit as {', '.join(formats)}" if formats else "give a PNG or JPEG of a digit"
        raise NotAPicture(f"{name}: {what}; {takes}") from None
    except (OSError, ValueError, SyntaxError) as err:
        raise DataError(f"{name}: the image file is damaged or truncated ({err}); save it again as PNG or "
                        "JPEG") from None
    if grey.ndim != 2 or grey.size == 0:
        raise DataError(f"{name}: the image has no pixels")
    return grey


def _eight_bits(values: np.ndarray) -> np.ndarray:
    """Grey levels 0..255 of a picture of integers or floats wider than 8 bits, scaled by the
    range its values fill: 0-1 (floats), 0-255, 0-4095 (12 bits), 0-65535 (16 bits), or else its
    maximum. Values below 0 read as 0; a NaN or an infinity as the picture's median (its paper)."""
    finite = np.isfinite(values)
    values = np.where(finite, values, np.median(values[finite]) if finite.any() else 0.0)
    high = values.max(initial=0.0)
    top = next((limit for limit in (1, 255, 4095, 65535) if high <= limit), high)
    return np.clip(values * (255 / top), 0, 255)


def _flattened(rgba) -> np.ndarray:
    """Grey levels of a picture with transparency: over white paper; but when that leaves nothing
    to see (white strokes on a transparent canvas), the drawing is in the transparency alone, and
    it becomes dark ink on white."""
    from PIL import Image

    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    grey = np.asarray(Image.alpha_composite(white, rgba).convert("L"), dtype=np.float64)
    alpha = np.asarray(rgba.getchannel("A"), dtype=np.float64)
    if np.ptp(grey) <= ONE_COLOUR < np.ptp(alpha):
        return 255.0 - alpha
    return grey


def is_mnist_style(grey: np.ndarray) -> bool:
    """Already 28x28 with a dark background: an MNIST image, used as it is."""
    border = np.concatenate([grey[0], grey[-1], grey[:, 0], grey[:, -1]])
    return grey.shape == (SIDE, SIDE) and float(np.median(border)) < 128


def _resize(array: np.ndarray, size) -> np.ndarray:
    """A float array resized to ``size`` = (width, height), bilinear or Lanczos (downsizing)."""
    from PIL import Image

    shrink = size[0] < array.shape[1]
    resized = Image.fromarray(array.astype(np.float32), mode="F").resize(size, Image.LANCZOS if shrink
                                                                         else Image.BILINEAR)
    return np.asarray(resized, dtype=np.float64)


def _box_blur(image: np.ndarray, k: int = 3) -> np.ndarray:
    """Mean over k x k windows, edges repeated."""
    padded = np.pad(image, k // 2, mode="edge")
    return np.lib.stride_tricks.sliding_window_view(padded, (k, k)).mean(axis=(2, 3))


def _otsu(values: np.ndarray, bins: int = 128) -> float:
    """The threshold that best splits ``values`` into two classes (Otsu's method)."""
    counts, edges = np.histogram(values, bins=bins)
    centres = (edges[:-1] + edges[1:]) / 2
    weight = np.cumsum(counts)
    mass = np.cumsum(counts * centres)
    below, above = weight[:-1], weight[-1] - weight[:-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        between = below * above * (mass[:-1] / below - (mass[-1] - mass[:-1]) / above) ** 2
    return float(edges[1:-1][np.nanargmax(between)]) if np.isfinite(between).any() else float(centres[-1])


def remove_background(grey: np.ndarray) -> tuple[np.ndarray, float]:
    """A photo of a digit -> its ink alone, bright on 0, at about WORK_SIDE: float (h, w) in 0..1,
    and the grey levels that 1 stands for (the ink's contrast with the paper).

    The paper's brightness is estimated on a coarse grid by rank filters over windows much wider
    than a stroke (a median decides which way the ink goes, and light paper always takes dark ink;
    then the paper's side of the distribution is taken), subtracted, and the rest scaled so full
    ink is 1. Ink that mostly lies in no valley, as strokes do (a glint's halo), is none: 0, 0."""
    h, w = grey.shape
    scale = min(1.0, WORK_SIDE / max(h, w))
    if scale < 1:
        grey = _resize(grey, (max(1, round(w * scale)), max(1, round(h * scale))))
    h, w = grey.shape
    cell = max(1, max(h, w) // GRID)
    gh, gw = -(-h // cell), -(-w // cell)
    padded = np.pad(grey, ((0, gh * cell - h), (0, gw * cell - w)), mode="edge")
    coarse = padded.reshape(gh, cell, gw, cell).mean(axis=(1, 3))
    window = min(WINDOW, 2 * (min(gh, gw) // 2) + 1)
    windows = np.lib.stride_tricks.sliding_window_view(np.pad(coarse, window // 2, mode="edge"), (window, window))
    low, median, high = np.percentile(windows.reshape(gh, gw, -1), [25, 50, 75], axis=-1)
    residual = grey - _resize(median, (w, h)) if (gh, gw) != (h, w) else grey - median
    # The ink is the side whose 1% tail reaches further from the paper; but a thin pen on a large
    # page covers less than 1% of it, and then only its 0.1% tail stands far out of the paper's.
    # A glint's 0.1% tail does too, so the 0.1% tails decide only while neither 1% tail stands out of the paper.
    tails = np.percentile(residual, [0.1, 1, 99, 99.9]) * [-1, -1, 1, 1]
    thin = THIN_INK * tails[[1, 2]].max() < tails[[0, 3]].max() and tails[[1, 2]].max() < PAPER_TAIL
    dark, light = tails[[0, 3]] if thin else tails[[1, 2]]
    # Light ink needs a dark ground (chalk on a board, a screen): on light paper what stands out
    # brighter is a glint, not a stroke. The ground is taken as light ink's reading takes it (low).
    dark_ink = dark > light or holds_dark_ink_only(float(np.median(low)))
    paper = _resize(high if dark_ink else low, (w, h)) if (gh, gw) != (h, w) else (high if dark_ink else low)
    ink = np.clip(paper - grey if dark_ink else grey - paper, 0, None)
    full = np.percentile(ink, 99.5)
    mask, _ = stroke_mask(ink / full if full > 0 else ink)
    if mask.any():
        # A shadow's sharp edge is a step in the paper that the smooth estimate blurs into a band
        # of false ink. A closing (an opening for light ink) over a few stroke widths keeps the
        # step and takes out the strokes; where it sees much less ink, in a region that runs in
        # from the picture's edge as a cast shadow does, it is right. A bold stroke's thick
        # junction, which the closing takes out too, is spared while the digit stays off the
        # edge; a bold digit cut by the edge can lose some of its ink.
        side = 2 * round(SHADOW_WINDOW * stroke_width(mask)) + 1
        local = np.clip(_closing(grey, side) - grey if dark_ink else grey - _closing(-grey, side) * -1, 0, None)
        shadowed = touching_the_edge(ink > local + SHADOW_GATE * full)
        ink = np.where(shadowed, np.minimum(ink, local), ink)
        # Strokes are valleys that the closing fills. A glint's halo, where the paper's estimate rides
        # up on the bright patch beside it, is none: ink the closing mostly does not see is no digit.
        strokes, _ = stroke_mask(ink)
        if np.minimum(ink, local)[strokes].sum() < MIN_VALLEY * ink[strokes].sum():
            ink, full = np.zeros_like(ink), 0.0
    return (ink / full if full > 0 else ink), float(full)


def holds_dark_ink_only(ground: float) -> bool:
    """Whether a ground of this grey level is light paper, on which what stands out brighter is a glint."""
    return ground > LIGHT_PAPER


def _max_filter(image: np.ndarray, side: int) -> np.ndarray:
    """The maximum over side x side windows (side odd), edges repeated: along rows, then columns."""
    half = side // 2
    view = np.lib.stride_tricks.sliding_window_view
    rows = view(np.pad(image, ((0, 0), (half, half)), mode="edge"), side, axis=1).max(axis=-1)
    return view(np.pad(rows, ((half, half), (0, 0)), mode="edge"), side, axis=0).max(axis=-1)


def _closing(image: np.ndarray, side: int) -> np.ndarray:
    """The image without its dark features narrower than ``side``: a maximum, then a minimum filter."""
    return -_max_filter(-_max_filter(image, side), side)


def stroke_mask(ink: np.ndarray) -> tuple[np.ndarray, float]:
    """The strokes of an ink image (0..1) and the threshold that found them: Otsu's, on the ink
    blurred over 3x3 so that a stroke's soft edge counts and single noisy pixels do not."""
    smooth = _box_blur(ink)
    threshold = _otsu(smooth)
    return smooth > threshold, threshold


def _labels(mask: np.ndarray) -> np.ndarray:
    """The 8-connected components of a boolean mask, each numbered (0 off the mask): labels spread by
    a neighbourhood maximum until nothing changes, a loop over steps, not pixels."""
    labels = np.where(mask, np.arange(1, mask.size + 1).reshape(mask.shape), 0)
    while True:
        spread = np.pad(labels, 1)
        spread = np.maximum(np.maximum(spread[:-2], spread[1:-1]), spread[2:])
        spread = np.maximum(np.maximum(spread[:, :-2], spread[:, 1:-1]), spread[:, 2:])
        # a label is a pixel of the same piece: taking that pixel's label too spreads it along a
        # stroke in a few steps rather than one step a pixel
        spread = np.where(mask, np.maximum(spread, spread.ravel()[np.maximum(spread, 1) - 1]), 0)
        if np.array_equal(spread, labels):
            return labels
        labels = spread


def _boxes(pieces: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, ...]:
    """The pieces named in ``pieces`` (a label for each pixel at ``rows``, ``cols``), and each one's
    box: (names, top, left, bottom, right), bottom and right one past the box."""
    names, piece = np.unique(pieces, return_inverse=True)
    top, left = np.full(names.size, rows.max(initial=0)), np.full(names.size, cols.max(initial=0))
    bottom, right = np.zeros(names.size, int), np.zeros(names.size, int)
    np.minimum.at(top, piece, rows), np.minimum.at(left, piece, cols)
    np.maximum.at(bottom, piece, rows + 1), np.maximum.at(right, piece, cols + 1)
    return names, top, left, bottom, right


def _specks(mask: np.ndarray) -> np.ndarray:
    """The pieces of a digit's mask that are specks of dirt, not strokes: round as a dot (no longer than
    SPECK times their own width, as stroke_width measures it), and small beside the largest piece."""
    labels = _labels(mask)
    rows, cols = np.nonzero(mask)
    names, top, left, bottom, right = _boxes(labels[mask], rows, cols)
    padded = np.pad(labels, 1)
    # each outline edge has ink on one side only: the piece there is the sum of the two labels
    outline = np.concatenate([(padded[1:] + padded[:-1])[(padded[1:] > 0) != (padded[:-1] > 0)],
                              (padded[:, 1:] + padded[:, :-1])[(padded[:, 1:] > 0) != (padded[:, :-1] > 0)]])
    area = np.bincount(labels[mask])[names]
    width = 2 * area / np.maximum(np.bincount(outline)[names], 1)
    round_and_small = (np.maximum(bottom - top, right - left) <= SPECK * width) & \
        (area <= SECOND_PIECE * area.max(initial=0))
    return np.isin(labels, names[round_and_small])


def _components(mask: np.ndarray) -> np.ndarray:
    """Sizes of the 8-connected components of a boolean mask, largest first."""
    return np.sort(np.unique(_labels(mask)[mask], return_counts=True)[1])[::-1]


def touching_the_edge(mask: np.ndarray) -> np.ndarray:
    """The pieces of ``mask`` (8-connected) that touch the picture's edge."""
    edge = np.zeros_like(mask)
    edge[[0, -1]] = mask[[0, -1]]
    edge[:, [0, -1]] |= mask[:, [0, -1]]
    return pieces_from(edge, mask)


def pieces_from(seeds: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The pieces of ``mask`` (8-connected) that hold a pixel of ``seeds``: grown from them a step
    at a time, inside the mask."""
    reached = seeds & mask
    while True:
        grown = np.pad(reached, 1)
        grown = grown[:-2] | grown[1:-1] | grown[2:]
        grown = (grown[:, :-2] | grown[:, 1:-1] | grown[:, 2:]) & mask
        if np.array_equal(grown, reached):
            return reached
        reached = grown


def stroke_width(mask: np.ndarray) -> float:
    """The mean width of a mask's strokes: twice its area over its outline's length."""
    mask = np.pad(mask, 1)  # the outline along the crop's edge counts too
    outline = (mask[1:] != mask[:-1]).sum() + (mask[:, 1:] != mask[:, :-1]).sum()
    return 2 * float(mask.sum()) / max(int(outline), 1)


def thickened(crop: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """A cropped digit whose strokes are thinner than MNIST's (a ballpoint pen's, on a large
    photo) widened to MIN_STROKE of its longer side by a maximum filter; else as it is. Thin
    strokes would come out faint and broken from the 20x20 reduction."""
    from PIL import Image, ImageFilter

    extra = round(MIN_STROKE * max(mask.shape) - stroke_width(mask))
    if extra < 2:
        return crop
    size = extra + 1 - extra % 2  # the filter's side is odd
    widened = Image.fromarray(np.pad(crop, size // 2).astype(np.float32), mode="F").filter(ImageFilter.MaxFilter(size))
    return np.asarray(widened, dtype=np.float64)


def prepare(grey: np.ndarray) -> tuple[np.ndarray, str | None]:
    """Any grey picture of one digit -> (uint8 (28, 28) white digit on black, fitted into a 20x20
    box and centred by mass as MNIST was made; a doubt: None, "blank" or "no single digit")."""
    if is_mnist_style(grey):
        return np.clip(np.rint(grey), 0, 255).astype(np.uint8), None
    image, doubt, found = prepare_framed(grey)
    # A digit small in a large photo is read framed, as cropped closer: in the whole picture the paper's
    # grain and light outweigh its strokes (no digit), or leave it a few pixels wide. A frame about a
    # part of the digit the whole picture gives (a bold stroke's tip) is not taken, nor one that holds none.
    frame = digit_frame(grey)
    if frame is not None and (doubt is not None or all(part.start <= seen.start and seen.stop <= part.stop
                                                       for part, seen in zip(frame, found))):
        framed_image, framed_doubt, _ = prepare_framed(grey[frame])
        if framed_doubt != BLANK:
            return framed_image, framed_doubt
    return image, doubt


def digit_frame(grey: np.ndarray) -> tuple[slice, slice] | None:
    """Where a digit small in a picture lies: a square twice its size about it, as (rows, columns) of
    ``grey`` (about two digits, or more, when pieces of ink alike in size lie apart); None when the
    picture holds no such digit, or one that fills much of it already.

    Strokes are valleys (light ones on a dark ground too) narrower than a cell, which no shadow or
    lighting is; those that stand GRAIN times the paper's grain, and MIN_CONTRAST, out of the paper
    are joined through neighbouring cells into pieces. Pieces that reach the picture's edge (a
    table, the page's edge), and a speck of dirt away from the digit, are passed over."""
    h, w = grey.shape
    factor = -(-max(h, w) // READ_SIDE)
    reduced = _resize(grey, (max(1, round(w / factor)), max(1, round(h / factor)))) if factor > 1 else grey
    cell = max(1, max(reduced.shape) // FRAME_CELLS)
    side = 2 * (cell // 2) + 1
    valleys = _closing(reduced, side) - reduced
    if not holds_dark_ink_only(float(np.median(reduced))):
        valleys = np.maximum(valleys, reduced + _closing(-reduced, side))  # the reduced minus its opening
    smooth = _box_blur(valleys)
    strong = smooth > max(MIN_CONTRAST, GRAIN * float(np.median(smooth)))
    rh, rw = -(-strong.shape[0] // cell), -(-strong.shape[1] // cell)
    cells = np.pad(strong, ((0, rh * cell - strong.shape[0]), (0, rw * cell - strong.shape[1])))
    labels = _labels(cells.reshape(rh, cell, rw, cell).any(axis=(1, 3)))
    rows, cols = np.nonzero(strong)
    pieces = labels[rows // cell, cols // cell]
    at_the_edge = (rows == 0) | (cols == 0) | (rows == strong.shape[0] - 1) | (cols == strong.shape[1] - 1)
    inside = ~np.isin(pieces, pieces[at_the_edge])
    if not inside.any():
        return None
    _, top, left, bottom, right = _boxes(pieces[inside], rows[inside], cols[inside])
    # Pieces alike in size to the largest (shape_doubt's second piece, by area; here by side) are framed
    # with it, so that two digits are read as no single digit.
    extent = np.maximum(bottom - top, right - left)
    alike = extent > np.sqrt(SECOND_PIECE) * extent.max()
    top, left, bottom, right = top[alike].min(), left[alike].min(), bottom[alike].max(), right[alike].max()
    span = max(bottom - top, right - left)
    # A piece no longer than the valleys are wide is a speck, or a bolder stroke's tip; a digit under
    # MNIST's own 20x20 box is not read
    size = span * factor
    if size > FRAME_SHARE * max(h, w) or span <= side or size < BOX:
        return None
    row, col = (top + bottom) * factor // 2, (left + right) * factor // 2
    return slice(max(0, row - size), row + size), slice(max(0, col - size), col + size)


def prepare_framed(grey: np.ndarray) -> tuple[np.ndarray, str | None, tuple[slice, slice] | None]:
    """``prepare`` for a picture that frames its digit (the digit a fair part of it, paper around it),
    and where the digit was found: (rows, columns) of ``grey``, or None."""
    ink, contrast = remove_background(grey)
    mask, threshold = stroke_mask(ink)
    every_stroke = ink[mask]
    no_digit = np.zeros((SIDE, SIDE), np.uint8), BLANK if contrast < MIN_CONTRAST else NO_SINGLE_DIGIT, None
    if every_stroke.size == 0 or mask.mean() > MAX_COVERAGE:  # a digit covers a small part of the picture
        return no_digit
    edge = touching_the_edge(mask)
    inside = mask & ~edge
    # A photo is aimed at its digit: ink that reaches the edge, when a tenth of the ink is
    # elsewhere, is a table, the page's edge or a shadow's, unless it comes near that ink: a
    # stroke of the digit that ends at the edge (a digit drawn or cropped close) stays.
    if edge.any() and ink[inside].sum() >= MIN_INSIDE * every_stroke.sum():
        near = _max_filter(inside.astype(np.float64), 2 * round(NEAR * stroke_width(inside)) + 1) > 0
        mask = inside | pieces_from(edge & near, edge)
        ink = _within(mask, ink)
    inked = ink[mask]
    # A digit's strokes stand clearly above the paper; paper alone, or noise, splits into two
    # classes that are neither. The ink kept is judged, or all of it: what is dropped at the edge
    # (a shadow's remnant) can be fainter than the digit, or stronger, and set the threshold.
    if max(np.median(inked), np.median(every_stroke)) < MIN_SEPARATION * threshold:
        return no_digit
    # A speck of dirt beside the digit would be fitted with it, the digit made smaller and moved off
    # centre. It is left out of the fit only: the grain of blank paper, read as specks, is no digit.
    specks = _specks(mask)
    if specks.any():
        mask = mask & ~specks
        ink = _within(mask, ink)
    low = 0.5 * threshold
    strokes = np.clip((ink - low) / (np.median(inked) - low), 0, 1)  # keeps the strokes' soft edges
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    box = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
    image = fit_and_centre(thickened(strokes[box], mask[box]) * 255.0)
    blot = stroke_width(mask[box]) > MAX_STROKE * max(mask[box].shape)
    found = tuple(slice(int(part.start * whole // work), -(-part.stop * whole // work))
                  for part, whole, work in zip(box, grey.shape, ink.shape))
    return image, NO_SINGLE_DIGIT if blot else shape_doubt(image), found


def _within(mask: np.ndarray, ink: np.ndarray) -> np.ndarray:
    """The ink of the mask's strokes and their soft edges (a pixel around them), none elsewhere."""
    return np.where(_box_blur(mask.astype(float)) > 0, ink, 0.0)


def shape_doubt(image: np.ndarray) -> str | None:
    """"no single digit" when the ink of a 28x28 image falls into several large pieces, else None."""
    sizes = _components(image > 96)
    if sizes.size == 0 or (sizes.size > 1 and sizes[1] > SECOND_PIECE * sizes[0]):
        return NO_SINGLE_DIGIT
    return None


def fit_and_centre(crop: np.ndarray) -> np.ndarray:
    """A cropped digit (float, bright on 0, up to 255) -> uint8 (28, 28): fitted into a 20x20 box
    keeping its aspect ratio and placed so its centre of mass is the field's centre."""
    h, w = crop.shape
    scale = BOX / max(h, w)
    boxed = np.clip(_resize(crop, (max(1, round(w * scale)), max(1, round(h * scale)))), 0, 255)
    field = np.zeros((SIDE, SIDE))
    mass = boxed.sum()
    ys, xs = np.indices(boxed.shape)
    cy, cx = (ys * boxed).sum() / mass, (xs * boxed).sum() / mass
    # place the box so its centre of mass lands on the field's centre, staying inside the field
    top = int(np.clip(round(SIDE / 2 - 0.5 - cy), 0, SIDE - boxed.shape[0]))
    left = int(np.clip(round(SIDE / 2 - 0.5 - cx), 0, SIDE - boxed.shape[1]))
    field[top:top + boxed.shape[0], left:left + boxed.shape[1]] = boxed
    return np.rint(field).astype(np.uint8)


def load_classifier(path: Path) -> tuple:
    """``(model, preprocess, class names)`` from a checkpoint, or from an exported ONNX file (run
    by onnxruntime, its preprocessing inside the graph: ``preprocess`` is None)."""
    if is_onnx_file(path):
        from .export import OnnxModel

        model = OnnxModel(path)
        return model, None, model.classes
    from .trainer import load_model

    model, meta, preprocess = load_model(path)
    return model, preprocess, cfg.class_names(meta["config"])


def check_digit_model(model, command: str, source="") -> None:
    """Pictures become 28x28 grey digits, as MNIST's: refuse a model that takes other input."""
    if tuple(model.input_shape) != (SIDE, SIDE, 1):
        raise UsageError(f"{source}{': ' if source else ''}{command} works with models of 28x28x1 input; this one "
                         f"takes {'x'.join(map(str, model.input_shape))}")


def predict_target(target, images, which: str | None = None, top: int = TOP, min_confidence: float = MIN_CONFIDENCE,
                   save_folder=None) -> tuple[Path, list[dict], list[Path]]:
    """Predict the pictures that ``images`` names (files, folders, globs: ``expand_inputs``) with
    the model of a run (its ``which`` checkpoint), a checkpoint or an exported ONNX file: the file
    the model came from, ``predict_files``'s results and the files passed over. ``save_folder``,
    where ``save_inputs`` will write the 28x28 images, is checked before the model loads (a folder
    that cannot be made costs no loading, nor predicting) and made once it has (a model refused
    leaves no folder behind)."""
    path = resolve_checkpoint(target, which)
    pictures, passed_over = expand_inputs(images)
    if save_folder is not None:
        make_save_folder(save_folder, pictures, make=False)
    model, preprocess, classes = load_classifier(path)
    if save_folder is not None:
        make_save_folder(save_folder, pictures)
    return path, predict_files(model, preprocess, pictures, classes, top, min_confidence), passed_over


def predict_files(model, preprocess, paths, classes: list[str], top: int = TOP,
                  min_confidence: float = MIN_CONFIDENCE) -> list[dict]:
    """For each picture file: its path, the top-``top`` classes with probabilities, the
    prediction, a ``doubt`` (None, "blank", "no single digit" or "low confidence") and the 28x28
    ``image`` the model saw; or, for a file that cannot be read, its path and ``error``."""
    check_digit_model(model, "predict")
    results = []
    for path in paths:
        try:
            image, doubt = prepare(read_grey(path))
        except (DataError, UsageError) as err:
            results.append({"path": str(path), "error": str(err)})
            continue
        results.append({"path": str(path), "doubt": doubt, "image": image})
    readable = [result for result in results if "image" in result]
    if readable:
        classify(model, preprocess, readable, classes, top, min_confidence)
    return results


def classify(model, preprocess, prepared: list[dict], classes: list[str], top: int = TOP,
             min_confidence: float = MIN_CONFIDENCE) -> None:
    """Add to each of ``prepared`` (dicts with the 28x28 ``image`` and the ``doubt`` of
    ``prepare``) its ``prediction``, the ``top`` classes with probabilities, and the doubt "low
    confidence" when the first is under ``min_confidence``. ``model``: anything with the engine's
    ``predict_logits(x, batch_size, transform)``, a Sequential or a fast plan."""
    images = np.stack([result["image"] for result in prepared])[..., None]
    probs = softmax(model.predict_logits(images, cfg.EVAL_BATCH_SIZE, preprocess).astype(np.float64))
    orders = np.argsort(-probs, axis=1, kind="stable")[:, :top]
    for result, probabilities, order in zip(prepared, probs, orders):
        nothing = not result["image"].any()  # blank, or no digit found in it: nothing to classify
        result["prediction"] = None if nothing else classes[order[0]]
        result["top"] = [] if nothing else [{"class": classes[i], "probability": float(probabilities[i])}
                                            for i in order]
        if result["doubt"] is None and probabilities[order[0]] < min_confidence:
            result["doubt"] = LOW_CONFIDENCE


SAVE_INPUTS = OutputOption("--save-inputs", "DIR")


def make_save_folder(folder, paths: list[Path], make: bool = True) -> Path:
    """The --save-inputs folder, made before predicting (``make`` False: only checked, as
    ``make_folder`` checks); one that holds pictures given is refused: the 28x28 images, written
    there as ``<name>[-N].png``, could replace them or the user's other pictures beside them."""
    given = [path for path in paths if path.resolve().parent == Path(folder).resolve()]
    if given:
        raise UsageError(f"--save-inputs {folder}: holds pictures given to predict ({given[0].name}); the 28x28 "
                         "images written there could replace them: give another folder, e.g. --save-inputs seen")
    return make_folder(folder, SAVE_INPUTS, make=make)


def save_inputs(results: list[dict], folder) -> None:
    """Write each result's 28x28 image to ``folder`` (made beforehand: ``make_save_folder``) as
    ``<input name>.png`` (``-2``, ``-3``... when two inputs share a name) and record the path as
    ``result["input_image"]``."""
    from PIL import Image

    folder = Path(folder)
    taken = set()
    with written_to(SAVE_INPUTS):
        for result in results:
            if "image" not in result:
                continue
            stem, n = Path(result["path"]).stem, 1
            while (name := stem if n == 1 else f"{stem}-{n}") in taken:
                n += 1
            taken.add(name)
            target = folder / f"{name}.png"
            with atomic_writer(target) as handle:
                Image.fromarray(result["image"]).save(handle, "PNG")
            result["input_image"] = str(target)
