"""facerig.io.image: safe decoding (limits checked on the header), modes, EXIF, arrays, tensors."""

from __future__ import annotations

import io
import struct
import time
import tracemalloc
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from facerig.errors import ImageTooLarge, ImageTooSmall, ImageUnreadable, InvalidInput, UnsupportedMode
from facerig.io.image import from_tensor, load_image, save_image, to_tensor


def _png_bytes(im: Image.Image) -> bytes:
    b = io.BytesIO()
    im.save(b, "PNG")
    return b.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _png_header_only(w: int, h: int) -> bytes:
    """A PNG whose IHDR announces w x h RGB pixels, followed by a tiny (bogus) IDAT."""
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(b"\0" * 64)) + _chunk(b"IEND", b"")


def _gradient(h: int = 40, w: int = 60) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 4 % 256, y * 6 % 256, (x + y) * 2 % 256], -1).astype(np.uint8)


# ---- sources ---------------------------------------------------------------------------------


def test_sources_path_bytes_pil_array_fileobj(tmp_path):
    a = _gradient()
    p = save_image(tmp_path / "sub" / "g.png", a)
    assert p.is_file()
    for src in (p, str(p), p.read_bytes(), bytearray(p.read_bytes()), Image.open(p), a, open(p, "rb")):
        out = load_image(src)
        assert out.dtype == np.uint8 and out.shape == (40, 60, 3) and out.flags["C_CONTIGUOUS"]
        np.testing.assert_array_equal(out, a)
        if hasattr(src, "close"):
            src.close()


def test_missing_path_is_invalid_input_naming_the_path(tmp_path):
    missing = tmp_path / "nope" / "face.jpg"
    with pytest.raises(InvalidInput) as ei:
        load_image(missing)
    assert type(ei.value) is InvalidInput
    assert str(missing) in str(ei.value)


def test_directory_and_wrong_type(tmp_path):
    with pytest.raises(InvalidInput):
        load_image(tmp_path)
    with pytest.raises(InvalidInput):
        load_image(12345)


# ---- bad inputs ------------------------------------------------------------------------------


def test_one_pixel_image_is_too_small():
    with pytest.raises(ImageTooSmall, match="1x1"):
        load_image(_png_bytes(Image.new("RGB", (1, 1))))
    with pytest.raises(ImageTooSmall):
        load_image(np.zeros((8, 100, 3), np.uint8))
    assert load_image(np.zeros((8, 100, 3), np.uint8), min_side=8).shape == (8, 100, 3)


def test_huge_header_rejected_fast_without_allocating():
    data = _png_header_only(30000, 30000)
    assert len(data) < 200
    tracemalloc.start()
    t0 = time.perf_counter()
    with pytest.raises(ImageTooLarge):
        load_image(data)
    dt = time.perf_counter() - t0
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert dt < 0.5
    assert peak < 5_000_000  # 30000x30000 RGB would be 2.7 GB


def test_huge_header_under_pils_own_limit_uses_ours(monkeypatch):
    # 11000 x 10000 = 110 M px: above our default 100 M, between PIL's warning and error limits
    with pytest.raises(ImageTooLarge, match="11000x10000"):
        load_image(_png_header_only(11000, 10000))
    # PIL's own DecompressionBombError (> ~179 M px) also becomes ImageTooLarge
    with pytest.raises(ImageTooLarge):
        load_image(_png_header_only(30000, 30000), max_pixels=2_000_000_000)


def test_max_pixels_argument_and_env(monkeypatch):
    data = _png_bytes(Image.new("RGB", (200, 100)))
    with pytest.raises(ImageTooLarge):
        load_image(data, max_pixels=19_999)
    assert load_image(data, max_pixels=20_000).shape == (100, 200, 3)
    monkeypatch.setenv("FACERIG_MAX_PIXELS", "1000")
    with pytest.raises(ImageTooLarge):
        load_image(data)
    with pytest.raises(ImageTooLarge):
        load_image(np.zeros((100, 200, 3), np.uint8))


@pytest.mark.parametrize("payload", [b"", b"hello, this is not an image", b"\x89PNG\r\n\x1a\n garbage", b"%PDF-1.4"])
def test_not_an_image(payload):
    with pytest.raises(ImageUnreadable):
        load_image(payload)


def test_truncated_jpeg(astronaut):
    b = io.BytesIO()
    Image.fromarray(astronaut).save(b, "JPEG", quality=90)
    data = b.getvalue()
    with pytest.raises(ImageUnreadable, match="(?i)truncat"):
        load_image(data[: len(data) // 2])


def test_corrupt_png(tmp_path):
    data = bytearray(_png_bytes(Image.fromarray(_gradient(64, 64))))
    i = data.index(b"IDAT") + 20
    data[i : i + 40] = bytes(40)
    p = tmp_path / "bad.png"
    p.write_bytes(bytes(data))
    with pytest.raises(ImageUnreadable) as ei:
        load_image(p)
    assert str(p) in str(ei.value) and "\n" not in str(ei.value)


# ---- modes -----------------------------------------------------------------------------------


def test_16bit_grayscale_png_scaled_not_clipped(tmp_path):
    a = np.array([[0, 257, 32768, 65535] * 8] * 32, dtype=np.uint16)
    p = tmp_path / "g16.png"
    Image.fromarray(a).save(p)
    assert Image.open(p).mode in ("I;16", "I")
    out = load_image(p)
    assert out.shape == (32, 32, 3)
    np.testing.assert_array_equal(out[0, :4, 0], [0, 1, 128, 255])
    assert (out[..., 0] == out[..., 2]).all()


@pytest.mark.parametrize("mode", ["I;16B", "I;16L", "I;16"])
def test_16bit_variants(mode):
    a = np.array([[0, 65535, 4112, 2570]] * 16, dtype=">u2" if mode == "I;16B" else "<u2")
    im = Image.frombytes(mode, (4, 16), a.tobytes())
    out = load_image(im, min_side=4)
    np.testing.assert_array_equal(out[0, :, 0], [0, 255, 16, 10])


def test_32bit_int_tiff_uses_declared_depth():
    a = np.array([[0, 2**31 - 1, 2**24, 0]] * 16, dtype=np.int32)
    b = io.BytesIO()
    Image.fromarray(a).save(b, "TIFF")
    out = load_image(b.getvalue(), min_side=4)
    np.testing.assert_array_equal(out[0, :, 0], [0, 255, 2, 0])  # full scale 2**31 - 1 (signed)


def test_float_mode_F():
    a = np.linspace(0, 1, 16, dtype=np.float32).reshape(1, 16).repeat(16, 0)
    out = load_image(Image.fromarray(a, "F"))
    assert out[0, 0, 0] == 0 and out[0, -1, 0] == 255
    wide = Image.fromarray(a * 1000 - 5, "F")  # outside [0, 1]: min-max normalised
    out = load_image(wide)
    assert out.min() == 0 and out.max() == 255


def test_rgba_png_composited_over_white(tmp_path):
    a = np.zeros((32, 32, 4), np.uint8)
    a[:, :16] = (255, 0, 0, 255)  # opaque red
    a[:, 16:24] = (0, 0, 255, 0)  # fully transparent
    a[:, 24:] = (0, 0, 0, 128)  # half-transparent black
    p = tmp_path / "rgba.png"
    Image.fromarray(a, "RGBA").save(p)
    out = load_image(p)
    np.testing.assert_array_equal(out[0, 0], [255, 0, 0])
    np.testing.assert_array_equal(out[0, 20], [255, 255, 255])
    assert abs(int(out[0, 30, 0]) - 127) <= 1
    np.testing.assert_array_equal(load_image(a), out)  # (H, W, 4) arrays: same rule


def test_exif_orientation_6_is_applied(tmp_path):
    a = np.zeros((20, 40, 3), np.uint8)  # stored 40 wide, 20 high
    a[:, :20] = (255, 0, 0)  # red on the stored left half
    a[:, 20:] = (0, 0, 255)
    im = Image.fromarray(a)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    p = tmp_path / "rot.jpg"
    im.save(p, "JPEG", quality=95, exif=exif.tobytes())
    out = load_image(p)
    assert out.shape == (40, 20, 3)  # displayed upright: 20 wide, 40 high
    np.testing.assert_array_equal(load_image(Image.open(p)), out)  # PIL input: same
    top, bottom = out[:15].reshape(-1, 3).mean(0), out[25:].reshape(-1, 3).mean(0)
    assert top[0] > 200 and top[2] < 60  # the stored left (red) is now on top
    assert bottom[2] > 200 and bottom[0] < 60


def _pil_modes():
    base = Image.fromarray(_gradient(32, 32))
    p_transparent = base.convert("P")
    p_transparent.info["transparency"] = 0
    return {
        "1": base.convert("1"),
        "L": base.convert("L"),
        "LA": base.convert("LA"),
        "P": base.convert("P"),
        "P+transparency": p_transparent,
        "PA": base.convert("PA"),
        "RGB": base,
        "RGBA": base.convert("RGBA"),
        "RGBX": base.convert("RGBX"),
        "CMYK": base.convert("CMYK"),
        "YCbCr": base.convert("YCbCr"),
        "HSV": base.convert("HSV"),
        "I": base.convert("I"),
        "F": base.convert("F"),
    }


@pytest.mark.parametrize("mode", list(_pil_modes()))
def test_pil_modes_convert_to_rgb(mode):
    im = _pil_modes()[mode]
    out = load_image(im)
    assert out.shape == (32, 32, 3) and out.dtype == np.uint8
    if mode in ("RGB", "RGBA", "RGBX", "CMYK", "YCbCr", "HSV"):
        assert np.abs(out.astype(int) - _gradient(32, 32)).max() <= 8
    if mode == "P+transparency":
        pal_index = np.asarray(im)
        assert (out[pal_index == 0] == 255).all()


@pytest.mark.parametrize("fmt", ["PNG", "TIFF", "WEBP", "BMP", "GIF"])
def test_encoded_formats(fmt):
    b = io.BytesIO()
    Image.fromarray(_gradient(32, 48)).save(b, fmt)
    out = load_image(b.getvalue())
    assert out.shape == (32, 48, 3)


def test_unsupported_pil_mode():
    with pytest.raises(UnsupportedMode, match="LAB"):
        load_image(Image.new("LAB", (32, 32)))


# ---- arrays ----------------------------------------------------------------------------------


def test_array_inputs():
    g = (np.arange(32 * 32) % 256).astype(np.uint8).reshape(32, 32)
    for a in (g, g[:, :, None]):
        out = load_image(a)
        assert out.shape == (32, 32, 3) and (out[..., 1] == g).all()
    np.testing.assert_array_equal(load_image(g.astype(np.uint16) * 257)[..., 0], g)
    np.testing.assert_array_equal(load_image(g.astype(np.float32) / 255.0)[..., 0], g)
    np.testing.assert_array_equal(load_image(g.astype(np.int64))[..., 0], g)
    assert load_image(np.ones((32, 32), bool)).max() == 255
    rgb = _gradient(32, 32)
    out = load_image(rgb)
    assert out is not rgb and np.array_equal(out, rgb)


def test_bad_arrays():
    with pytest.raises(InvalidInput, match=r"\[0, 1\]"):
        load_image(np.full((32, 32, 3), 200.0, np.float32))
    with pytest.raises(InvalidInput):
        load_image(np.full((32, 32, 3), np.nan, np.float32))
    with pytest.raises(InvalidInput):
        load_image(np.full((32, 32), 300, np.int32))
    with pytest.raises(UnsupportedMode):
        load_image(np.zeros((32, 32, 5), np.uint8))
    with pytest.raises(UnsupportedMode):
        load_image(np.zeros((3, 32, 32), np.uint8))
    with pytest.raises(UnsupportedMode):
        load_image(np.zeros((32, 32, 3), np.complex64))


# ---- tensors and saving ----------------------------------------------------------------------


def test_tensor_round_trip(astronaut):
    t = to_tensor(astronaut)
    assert t.shape == (1, 3, 512, 512) and t.dtype == torch.float32
    assert 0.0 <= float(t.min()) and float(t.max()) <= 1.0
    np.testing.assert_array_equal(from_tensor(t), astronaut)
    np.testing.assert_array_equal(from_tensor(t[0]), astronaut)
    np.testing.assert_array_equal(load_image(t), astronaut)
    assert from_tensor(torch.full((1, 1, 20, 20), 2.0)).min() == 255  # clamped, gray -> RGB
    with pytest.raises(InvalidInput):
        from_tensor(torch.zeros(2, 3, 8, 8))


def test_save_image_formats(tmp_path, astronaut):
    p = save_image(tmp_path / "a.png", astronaut)
    np.testing.assert_array_equal(load_image(p), astronaut)
    p = save_image(tmp_path / "deep" / "a.jpg", to_tensor(astronaut), quality=95)
    assert np.abs(load_image(p).astype(int) - astronaut).mean() < 3
    rgba = np.zeros((20, 20, 4), np.uint8)
    rgba[..., 3] = 7
    p = save_image(tmp_path / "a.webp", rgba)
    assert Image.open(p).mode == "RGBA"
    with pytest.raises(InvalidInput):
        save_image(tmp_path / "a.unknown", astronaut)
