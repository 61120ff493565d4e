"""`readers.base`: decode_image (resize, RGB conversion, corrupt data naming the key)."""
from __future__ import annotations

import io
import pickle
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

import readers.base
from readers import CorruptImageError, decode_image
from readers.base import encode_jpeg


def _image(seed: int, size: int = 24) -> np.ndarray:
    """A smooth colour image (JPEG-friendly) that differs per seed."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    chans = [128 + 100 * np.sin(2 * np.pi * (rng.uniform(0.5, 2) * xx + rng.uniform(0.5, 2) * yy + rng.uniform()))
             for _ in range(3)]
    return np.stack(chans, axis=-1).astype(np.uint8)


def test_decode_image_resizes_and_converts_to_rgb() -> None:
    buf = io.BytesIO()
    Image.fromarray(_image(0, 20)[..., 0], "L").save(buf, format="PNG")
    out = decode_image(buf.getvalue(), "k", 16)
    assert out.shape == (16, 16, 3) and out.dtype == np.uint8
    assert np.array_equal(out[..., 0], out[..., 1])


def test_decode_image_rejects_garbage_naming_key() -> None:
    with pytest.raises(CorruptImageError) as info:
        decode_image(b"not an image at all", "id_1/x.jpg", 16)
    assert info.value.key == "id_1/x.jpg"
    assert "id_1/x.jpg" in str(info.value)
    truncated = encode_jpeg(_image(1))[:200]
    with pytest.raises(CorruptImageError):
        decode_image(truncated, "t", 16)


def _png(size: int = 24) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(_image(3, size)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.parametrize(
    "data, reason",
    [
        (_png()[:-60], "truncated"),
        (encode_jpeg(_image(1))[:200], "truncated"),
        (b"plain text, not an image", "not an image"),
    ],
    ids=["truncated-png", "truncated-jpeg", "text"],
)
def test_corrupt_image_says_why(data: bytes, reason: str) -> None:
    with pytest.raises(CorruptImageError) as info:
        decode_image(data, "id_7/x.png", 16)
    assert info.value.key == "id_7/x.png" and info.value.reason.startswith(reason)
    assert str(info.value) == f"corrupt image 'id_7/x.png': {info.value.reason}"
    again = pickle.loads(pickle.dumps(info.value))
    assert (again.key, again.reason, str(again)) == (info.value.key, info.value.reason, str(info.value))


def test_pixel_limit_is_checked_before_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    data = _png(24)
    assert decode_image(data, "ok", 16, max_pixels=24 * 24).shape == (16, 16, 3)
    with pytest.raises(CorruptImageError) as info:
        decode_image(data, "big", 16, max_pixels=24 * 24 - 1)
    assert info.value.reason == "too large: 24 x 24 pixels > 575"
    assert "big" in str(info.value) and "too large: 24 x 24 pixels > 575" in str(info.value)
    assert readers.base.MAX_IMAGE_PIXELS == 40_000_000
    monkeypatch.setattr("readers.base.MAX_IMAGE_PIXELS", 100)
    with pytest.raises(CorruptImageError, match="too large: 24 x 24 pixels > 100"):
        decode_image(data, "big", 16)


def _png_claiming(width: int, height: int) -> bytes:
    """A small PNG whose IHDR chunk (CRC fixed up) announces `width` x `height` pixels."""
    png = _png(24)
    at = png.index(b"IHDR")
    chunk = b"IHDR" + struct.pack(">II", width, height) + png[at + 12:at + 17]
    return png[:at] + chunk + struct.pack(">I", zlib.crc32(chunk)) + png[at + 21:]


def test_pixel_limit_holds_before_any_pixel_is_decoded(monkeypatch: pytest.MonkeyPatch) -> None:
    """A header announcing 8000 x 8000 pixels, with almost no data behind it, is refused unread."""
    bomb = _png_claiming(8000, 8000)
    loads: list[object] = []
    monkeypatch.setattr(Image.Image, "load", lambda self: loads.append(self))
    with pytest.raises(CorruptImageError) as info:
        decode_image(bomb, "bomb.png", 16)
    assert info.value.reason == f"too large: 8000 x 8000 pixels > {readers.base.MAX_IMAGE_PIXELS}"
    assert not loads
    monkeypatch.undo()
    with pytest.raises(CorruptImageError) as info:  # past PIL's own limit, which refuses it in Image.open
        decode_image(_png_claiming(50_000, 50_000), "huge.png", 16)
    assert info.value.reason.startswith("too large: 2500000000 pixels > ")
