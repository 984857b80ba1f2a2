"""The API kernel's image decoding (kernel/media.py) with real Pillow: what reaches the
model is the picture as a viewer shows it; every bad image is a 400 naming its field."""

from __future__ import annotations

import io

import pytest

PIL = pytest.importorskip("PIL")

from hoshikage_api.kernel.errors import ApiError  # noqa: E402
from hoshikage_api.kernel.media import Pending, decode  # noqa: E402
from PIL import Image  # noqa: E402

FIELD = "messages[0].content[1].image_url.url"


def encoded(image, fmt: str = "PNG", **save) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt, **save)
    return out.getvalue()


def test_transparency_is_shown_over_white():
    clear = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    media = decode(Pending(encoded(clear), FIELD), 10_000)
    assert (media.width, media.height) == (4, 4)
    assert media.data == bytes([255, 255, 255]) * 16


def test_exif_orientation_turns_the_photo_upright():
    wide = Image.new("RGB", (6, 2), (10, 200, 30))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to view
    media = decode(Pending(encoded(wide, "JPEG", exif=exif.tobytes()), FIELD), 10_000)
    assert (media.width, media.height) == (2, 6)
    assert len(media.data) == 2 * 6 * 3


def test_the_same_pixels_have_the_same_id_whatever_the_format():
    red = Image.new("RGB", (8, 8), (200, 0, 0))
    png = decode(Pending(encoded(red), FIELD), 10_000)
    bmp = decode(Pending(encoded(red, "BMP"), FIELD), 10_000)
    assert png.id == bmp.id and png.data == bmp.data


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (b"not an image at all", "not an image"),
        (encoded(Image.new("RGB", (8, 8)), "TIFF"), "not supported"),
        (encoded(Image.new("RGB", (300, 300))), "server.max_image_pixels"),
    ],
    ids=["not-an-image", "tiff", "over-the-pixel-cap"],
)
def test_bad_images(data, words):
    with pytest.raises(ApiError) as err:
        decode(Pending(data, FIELD), 10_000)
    assert err.value.status == 400 and err.value.param == FIELD
    assert words in str(err.value)
