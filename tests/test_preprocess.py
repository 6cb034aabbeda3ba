import base64
import io
import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from fmnist_core import analysis
from fmnist_core.data.fashion import load_data
from fmnist_core.data.preprocess import ImageError, prepare_data_url, prepare_upload
from fmnist_core.runs.trained import get_or_train
from fmnist_core.training.config import RunConfig


def png_bytes(image: Image.Image, fmt="PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def test_a_real_test_image_photographed_dark_on_light_comes_back_as_it_was():
    data = load_data()
    original = data.test_images[0, 0].numpy()  # an ankle boot
    photo = Image.fromarray(((1 - original) * 255).astype(np.uint8)).resize(
        (280, 280), Image.Resampling.BICUBIC
    )
    framed = Image.new("L", (400, 360), 255)
    framed.paste(photo, (60, 40))
    seen = prepare_upload(png_bytes(framed.convert("RGB"), "JPEG"))
    assert seen.shape == (28, 28) and seen.dtype == np.float32
    assert np.abs(seen - original).mean() < 0.08


def test_classifier_reads_uploaded_test_images_like_the_originals():
    data = load_data()
    run = get_or_train(RunConfig.for_model("mlp", epochs=2, train_subset=20_000))
    images = data.test_images[:400]  # 40 gave 0.875-0.95 across seeds: too few to judge by
    direct = analysis.predict_proba(run.model, images).argmax(1)
    uploaded = np.stack(
        [
            prepare_upload(png_bytes(Image.fromarray((img[0].numpy() * 255).astype(np.uint8))))
            for img in images
        ]
    )
    via_upload = analysis.predict_proba(run.model, torch.from_numpy(uploaded)[:, None]).argmax(1)
    assert (direct == via_upload).mean() >= 0.9  # 0.93 and 0.94 measured for seeds 0 and 1


def test_rgba_is_composited_and_16_bit_is_scaled_not_clipped():
    rgba = Image.new("RGBA", (100, 100), (0, 0, 0, 0))  # transparent background
    for x in range(30, 70):
        for y in range(20, 80):
            rgba.putpixel((x, y), (20, 20, 20, 255))  # a dark opaque garment
    seen = prepare_upload(png_bytes(rgba))
    assert seen[14, 14] > 0.9 and seen[0, 0] == 0.0  # object light, background dark
    ramp = (np.linspace(0, 30000, 64 * 64).reshape(64, 64)).astype(np.uint16)
    sixteen_bit = Image.fromarray(ramp)
    assert sixteen_bit.mode == "I;16"
    sixteen = prepare_upload(png_bytes(sixteen_bit))
    assert sixteen.min() >= 0.0 and sixteen.max() <= 1.0 and len(np.unique(sixteen)) > 50


@pytest.mark.parametrize(
    "data, message",
    [
        (b"", "empty"),
        (b"hello, this is not an image at all", "not a PNG, JPEG or WebP"),
        (b"GIF89a" + b"\x00" * 40, "not a PNG, JPEG or WebP"),
    ],
)
def test_bad_uploads_raise_a_one_line_reason(data, message):
    with pytest.raises(ImageError, match=message):
        prepare_upload(data)


def test_truncated_and_huge_images_are_refused():
    good = png_bytes(Image.fromarray(np.random.default_rng(0).integers(0, 255, (200, 200), dtype=np.uint8)))
    with pytest.raises(ImageError, match="truncated|not a PNG"):
        prepare_upload(good[: len(good) // 2])
    huge = png_bytes(Image.new("1", (20_000, 20_000)))  # compresses to a few kB; 400 MP decoded
    assert len(huge) < 2_000_000
    with pytest.raises(ImageError, match="20000x20000|too large"):
        prepare_upload(huge)


@pytest.mark.parametrize("kind, header", [(b"zTXt", b"Comment\x00\x00"), (b"iCCP", b"profile\x00\x00")])
def test_a_png_whose_metadata_would_inflate_is_refused_for_that_reason(kind, header):
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    plain = png_bytes(Image.fromarray(np.zeros((28, 28), np.uint8)))
    hostile = plain[:33] + chunk(kind, header + zlib.compress(bytes(100 << 20), 9)) + plain[33:]
    assert len(hostile) < 200_000  # 100 MB of metadata in a small file
    with pytest.raises(ImageError, match="its metadata .* would inflate to more than 1 MB"):
        prepare_upload(hostile)


def data_url(grey: np.ndarray) -> str:
    return "data:image/png;base64," + base64.b64encode(png_bytes(Image.fromarray(grey))).decode()


def test_a_drawing_is_cropped_centred_and_scaled():
    canvas = np.zeros((280, 280), dtype=np.uint8)
    canvas[100:140, 20:60] = 255  # a small white square off to the side
    seen = prepare_data_url(data_url(canvas))
    rows, cols = np.nonzero(seen > 0.5)
    assert rows.min() <= 1 and rows.max() >= 26 and abs(cols.mean() - 13.5) < 1.5
    assert prepare_data_url(data_url(np.zeros((280, 280), np.uint8))).max() == 0.0  # empty stays empty


def test_a_real_test_image_drawn_on_the_canvas_comes_back_as_it_was():
    original = load_data().test_images[0, 0].numpy()
    drawn = np.kron((original * 255).astype(np.uint8), np.ones((10, 10), np.uint8))  # 280x280
    seen = prepare_data_url(data_url(drawn))
    assert np.abs(seen - original).mean() < 0.08  # as an upload of the same image


@pytest.mark.parametrize(
    "drawing, message",
    [
        ("https://example.com/x.png", "did not arrive as a PNG"),
        ({"png": "data:image/png;base64,"}, "did not arrive as a PNG"),
        ("data:image/png;base64,@@@@", "PNG is damaged"),
        ("data:image/png;base64,iVBORw0KGgo=", "truncated or damaged|not a PNG"),
        ("data:image/png;base64," + "A" * 20_000_000, "far too large"),
    ],
)
def test_a_malformed_drawing_is_refused_with_a_reason(drawing, message):
    with pytest.raises(ImageError, match=message):
        prepare_data_url(drawing)
