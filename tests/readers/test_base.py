"""`readers.base`: decode_image (resize, RGB conversion, corrupt data naming the key)."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from readers import CorruptImageError, decode_image
from readers.recordio import encode_jpeg


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
