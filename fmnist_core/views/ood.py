"""Is a picture a Fashion-MNIST garment at all? Several scores, each calibrated on real images.

One weak autoencoder's reconstruction error misses obvious non-garments (random noise and text
reconstruct "well enough" through a blurry decoder). Each score below looks at another side of an
image, and the scores are judged together:
  reconstruction  the autoencoder's squared error relative to the image's own energy (what it
                  cannot redraw);
  code distance   the cosine distance from its latent code to the 5th nearest real image's code
                  (a code no garment has, even if the decoder blurs it into something plausible);
  roughness       mean absolute difference between neighbouring pixels (noise, text, checkerboards);
  ink             the share of pixels lit, on both sides (empty or filled-square images);
  pieces          how many separate blobs of ink it has (text and textures are many);
  thinness        the share of its ink on the ink's edge (strokes and noise are all edge);
  corners         how lit its least-lit corner is (a rectangle of texture fills all four);
  extent          the ink's shorter side (a line of text is a thin strip);
  detail          how much brightness bends inside the ink (text: a lot; smooth textures: none).
Each score is compared with a calibration set of real training images (Detector says how); the
test set, never used to calibrate, measures the share of real images flagged.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

from fmnist_core import analysis
from fmnist_core.base.files import ArraySpec
from fmnist_core.models import get_spec
from fmnist_core.runs.trained import TrainedRun
from fmnist_core.store.cache import keep_derived, read_derived

NEIGHBOUR = 5  # the k in the k-th nearest code
INK = 0.1  # a pixel brighter than this counts as lit
COMBINED = 0.005  # the share of real images the combined test may flag
SINGLE = 0.005  # and the share the single-score tests may flag, all together
TRUNCATE = 0.05  # p-values above this count for nothing in the combined test
TWO_SIDED = ("ink", "detail")  # scores unusual on either side
LOWER_TAIL = ("extent",)  # scores unusual when small; the others, when large
MAX_CALIBRATION = 60_000  # calibration images a kept check may hold: the whole training set


@dataclass(frozen=True)
class Verdict:
    flagged: bool
    scores: dict[str, float]
    reasons: list[str]  # one line per score out of range, for the page


@dataclass(frozen=True)
class Detector:
    """One autoencoder run and the scores of real calibration images (see fit_detector).

    Each score of a new image becomes a p-value: the share of calibration images scoring at least
    as high (ink: as far out on either side). The image is flagged when the p-values together are
    unlike real images' (Fisher's sum of -2 log p above the calibration's 99.5th percentile), or
    when one alone is (below 0.005 / the number of scores): together at most about 1% of real images.
    """

    run: TrainedRun
    reference_codes: np.ndarray  # (M, n) codes of the calibration images, for the code distance
    calibration: dict[str, np.ndarray]  # score -> the calibration images' scores, sorted
    combined_limit: float  # Fisher's statistic that 99.5% of calibration images stay under

    def scores(self, images: np.ndarray) -> dict[str, np.ndarray]:
        return image_scores(self.run, images, self.reference_codes)

    def p_values(self, scores: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return p_values(scores, self.calibration)

    def flagged(self, images: np.ndarray) -> np.ndarray:
        """Whether each of (N, 28, 28) images is flagged."""
        return flagged(self.p_values(self.scores(images)), self.combined_limit)

    def check(self, image: np.ndarray) -> Verdict:
        scores = {name: values for name, values in self.scores(image[None]).items()}
        p = self.p_values(scores)
        reasons = [
            f"its {name} ({float(scores[name][0]):.3g}) is matched by only {float(p[name][0]):.1%} of real images"
            for name in sorted(p, key=lambda n: float(p[n][0]))
            if float(p[name][0]) < 0.01
        ]
        out = bool(flagged(p, self.combined_limit)[0])
        if out and not reasons:
            reasons = ["several of its scores are unusual together"]
        return Verdict(out, {name: float(v[0]) for name, v in scores.items()}, reasons if out else [])


def flagged(p: dict[str, np.ndarray], combined_limit: float) -> np.ndarray:
    """The rule (see Detector): the p-values together, or any one alone, unlike real images'."""
    return (fisher(p) > combined_limit) | (np.min(np.stack(list(p.values())), axis=0) < SINGLE / len(p))


def p_values(scores: dict[str, np.ndarray], calibration: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    out = {}
    for name, values in scores.items():
        reference = calibration[name]
        n = len(reference)
        upper = (n - np.searchsorted(reference, values, side="left") + 1) / (n + 1)
        lower = (np.searchsorted(reference, values, side="right") + 1) / (n + 1)
        if name in TWO_SIDED:  # too little and too much are both unlike a garment
            out[name] = np.minimum(1.0, 2 * np.minimum(upper, lower))
        else:
            out[name] = lower if name in LOWER_TAIL else upper
    return out


def fisher(p: dict[str, np.ndarray]) -> np.ndarray:
    """Fisher's -2 sum(log p), over the p-values below TRUNCATE only (Zaykin's truncated product):
    the scores that see nothing unusual in an image do not dilute the ones that do."""
    values = np.stack(list(p.values()))
    return -2 * np.sum(np.where(values < TRUNCATE, np.log(values), 0.0), axis=0)


def roughness(images: np.ndarray) -> np.ndarray:
    dx = np.abs(np.diff(images, axis=2)).mean(axis=(1, 2))
    dy = np.abs(np.diff(images, axis=1)).mean(axis=(1, 2))
    return dx + dy


def code_distance(codes: np.ndarray, reference: np.ndarray, skip_self: bool = False) -> np.ndarray:
    """Cosine distance from each code to its NEIGHBOUR-th nearest reference code (itself not counted
    when the codes are the reference's own). Cosine, not Euclidean: a code's length mostly says how
    much ink the image has; its direction says what the image is."""
    a = torch.nn.functional.normalize(torch.from_numpy(np.asarray(codes, dtype=np.float32)), dim=1)
    b = torch.nn.functional.normalize(torch.from_numpy(np.asarray(reference, dtype=np.float32)), dim=1)
    k = NEIGHBOUR + (1 if skip_self else 0)
    out = [1 - (block @ b.T).topk(k).values[:, -1] for block in torch.split(a, 1024)]
    return torch.cat(out).numpy()


def image_scores(
    run: TrainedRun,
    images: np.ndarray,
    reference_codes: np.ndarray,
    skip_self: bool = False,
    codes: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Every score for (N, 28, 28) images in [0, 1] (`codes`: theirs, where already encoded)."""
    images = np.asarray(images, dtype=np.float32)
    batch = torch.from_numpy(images).unsqueeze(1)
    rebuilt = analysis.reconstructions(run.model, batch)
    codes = analysis.latent_codes(run.model, batch) if codes is None else codes
    energy = (images**2).sum(axis=(1, 2))
    return {
        # relative: a faint image's small error counts as much as a bright one's large one
        "reconstruction error": ((rebuilt - images) ** 2).sum(axis=(1, 2)) / np.maximum(energy, 1e-6),
        "code distance": code_distance(codes, reference_codes, skip_self),
        "roughness": roughness(images),
        "ink": (images > INK).mean(axis=(1, 2)),
        "pieces": pieces(images),
        "thinness": thinness(images),
        "corners": corners(images),
        "extent": extent(images),
        "detail": detail(images),
    }


def extent(images: np.ndarray) -> np.ndarray:
    """The ink's shorter side, in pixels: a line of text scaled to 28 wide is a strip 3-6 pixels
    high; no garment (a sandal's sole, a flat bag) is under 6."""
    lit = images > INK
    return np.minimum(lit.any(axis=2).sum(axis=1), lit.any(axis=1).sum(axis=1)).astype(np.float64)


def detail(images: np.ndarray) -> np.ndarray:
    """How much the brightness bends inside the ink (mean |Laplacian| over pixels whose neighbours
    are lit, relative to their brightness): letters' strokes are all bend, a blurred texture
    hardly any; a garment's folds and prints sit between."""
    lit = images > INK
    padded = np.pad(lit, ((0, 0), (1, 1), (1, 1)))
    inside = lit & padded[:, :-2, 1:-1] & padded[:, 2:, 1:-1] & padded[:, 1:-1, :-2] & padded[:, 1:-1, 2:]
    bend = np.abs(np.stack([ndimage.laplace(image) for image in images]))
    return (bend * inside).sum(axis=(1, 2)) / np.maximum((images * inside).sum(axis=(1, 2)), 1e-6)


def corners(images: np.ndarray, size: int = 5) -> np.ndarray:
    """The least-lit of the four corner patches' ink shares: a rectangle of texture (noise, a
    photo's crop) fills all four corners, a garment's outline leaves at least one dark."""
    lit = images > INK
    patches = [lit[:, :size, :size], lit[:, :size, -size:], lit[:, -size:, :size], lit[:, -size:, -size:]]
    return np.min(np.stack([p.mean(axis=(1, 2)) for p in patches]), axis=0)


def thinness(images: np.ndarray) -> np.ndarray:
    """The share of lit pixels on the ink's edge (a neighbour up, down, left or right unlit): near 1
    for strokes and noise, lower for a garment's filled shape."""
    lit = np.pad(images > INK, ((0, 0), (1, 1), (1, 1)))
    inner = lit[:, 1:-1, 1:-1] & lit[:, :-2, 1:-1] & lit[:, 2:, 1:-1] & lit[:, 1:-1, :-2] & lit[:, 1:-1, 2:]
    count = lit.sum(axis=(1, 2))
    return np.where(count > 0, 1 - inner.sum(axis=(1, 2)) / np.maximum(count, 1), 1.0)


def pieces(images: np.ndarray) -> np.ndarray:
    """How many separate blobs of ink each image has (8-connected, 3 pixels or more): a garment is
    one piece, a sandal a few; text, noise and textures are many."""
    structure = np.ones((3, 3), dtype=bool)
    out = np.zeros(len(images))
    for i, image in enumerate(images):
        labels, count = ndimage.label(image > INK, structure=structure)
        sizes = np.bincount(labels.ravel())[1:]
        out[i] = int((sizes >= 3).sum())
    return out


def save_detector(detector: Detector, path: Path) -> None:
    """Keep a calibration beside the cache (numpy arrays, no pickle, written in one step); where it
    cannot be written it is made again next time."""
    arrays = {f"score:{name}": values for name, values in detector.calibration.items()}
    arrays |= {
        "reference_codes": detector.reference_codes,
        "combined_limit": np.array(detector.combined_limit, dtype=np.float64),
    }
    keep_derived(path, arrays)


def _expected(run: TrainedRun) -> dict[str, ArraySpec]:
    """What a calibration of this run keeps: its codes' width and its scores' names and types, as
    one blank image gives them."""
    blank = np.zeros((1, 28, 28), np.float32)
    codes = analysis.latent_codes(run.model, torch.from_numpy(blank).unsqueeze(1))
    scores = image_scores(run, blank, np.repeat(codes, NEIGHBOUR, axis=0), codes=codes)
    expected = {f"score:{name}": ((None,), values.dtype) for name, values in scores.items()}
    return expected | {
        "reference_codes": ((None, codes.shape[1]), codes.dtype),
        "combined_limit": ((), np.float64),
    }


def load_detector(run: TrainedRun, path: Path) -> Detector | None:
    """A calibration kept by save_detector for this run; None where there is none or it does not
    read as one (it is made again): another run's, another width of code, another version's
    scores, unsorted scores or numbers that are not finite."""
    stored = read_derived(path, _expected(run), longest=MAX_CALIBRATION)
    if stored is None:
        return None
    codes, limit = stored.pop("reference_codes"), float(stored.pop("combined_limit"))
    calibration = {key.split(":", 1)[1]: values for key, values in stored.items()}
    sound = (
        len(codes) >= NEIGHBOUR  # the code distance reads the NEIGHBOUR-th nearest
        and np.isfinite(codes).all()
        and np.isfinite(limit)
        and all(len(v) == len(codes) and (np.diff(v) >= 0).all() for v in calibration.values())
    )
    return Detector(run, codes, calibration, limit) if sound else None


def fit_detector(run: TrainedRun, calibration: np.ndarray) -> Detector:
    """Calibrate on (N, 28, 28) real images (training images: the test set stays for measuring)."""
    if not get_spec(run.config.model).reconstructs:
        raise ValueError(f"run {run.run_id}: the check needs an autoencoder, not a {run.config.model}")
    images = np.asarray(calibration, np.float32)
    codes = analysis.latent_codes(run.model, torch.from_numpy(images).unsqueeze(1))
    scores = image_scores(run, images, codes, skip_self=True, codes=codes)  # encoded once
    sorted_scores = {name: np.sort(values) for name, values in scores.items()}
    combined = fisher(p_values(scores, sorted_scores))
    return Detector(run, codes, sorted_scores, float(np.quantile(combined, 1 - COMBINED)))


# --- Pictures that are not garments, to measure the check on --------------------------------------

WORDS = ("Hello", "SALE 50%", "fashion", "Ankle boot", "T-shirt", "42", "lorem ipsum", "OK", "Zalando", "abc")


def not_garments(count: int = 50, seed: int = 0) -> dict[str, list[bytes]]:
    """Uploads a person might try that are no garments, as PNG bytes (what Try it receives): noise,
    solid colours, checkerboards, stripes, text (dark on white and white on black), smooth
    textures, and crops of two photographs of scenes (scikit-learn's sample images)."""
    from PIL import Image, ImageDraw, ImageFilter, ImageFont
    from sklearn.datasets import load_sample_images

    rng = np.random.default_rng(seed)

    def png(array: np.ndarray) -> bytes:
        import io

        buffer = io.BytesIO()
        Image.fromarray(np.clip(array, 0, 255).astype(np.uint8)).save(buffer, format="PNG")
        return buffer.getvalue()

    def text(dark_on_white: bool) -> bytes:
        size = int(rng.integers(20, 60))
        try:
            font = ImageFont.truetype("DejaVuSans.ttf", size)
        except OSError:
            font = ImageFont.load_default(size)
        words = " ".join(rng.choice(WORDS, int(rng.integers(1, 4))))
        image = Image.new("L", (int(size * len(words) * 0.7) + 20, size * 2), 255 if dark_on_white else 0)
        ImageDraw.Draw(image).text((10, size // 3), words, fill=0 if dark_on_white else 255, font=font)
        return png(np.asarray(image))

    def texture() -> bytes:
        noise = Image.fromarray((rng.random((112, 112)) * 255).astype(np.uint8))
        return png(np.asarray(noise.filter(ImageFilter.GaussianBlur(float(rng.uniform(3, 12))))) * 3 - 255)

    photos = [np.asarray(Image.fromarray(p).convert("L")) for p in load_sample_images().images]

    def photo() -> bytes:
        picture = photos[int(rng.integers(len(photos)))]
        side = int(rng.integers(100, min(picture.shape)))
        top, left = (int(rng.integers(0, picture.shape[i] - side)) for i in (0, 1))
        return png(picture[top : top + side, left : left + side])

    def checkerboard() -> bytes:
        cell = int(rng.integers(2, 12))
        board = (np.indices((112, 112)) // cell).sum(axis=0) % 2
        return png(board * 255)

    def stripes() -> bytes:
        width = int(rng.integers(2, 14))
        lines = (np.arange(112) // width) % 2 * 255
        return png(np.tile(lines, (112, 1)) if rng.random() < 0.5 else np.tile(lines[:, None], (1, 112)))

    makers = {
        "noise": lambda: png(rng.random((64, 64)) * 255),
        "solid colours": lambda: png(np.full((64, 64), float(rng.integers(30, 256)))),
        "checkerboards": checkerboard,
        "stripes": stripes,
        "text, dark on white": lambda: text(True),
        "text, white on black": lambda: text(False),
        "smooth textures": texture,
        "photos of scenes": photo,
    }
    return {name: [make() for _ in range(count)] for name, make in makers.items()}
