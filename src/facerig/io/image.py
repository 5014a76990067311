"""Safe image decoding and encoding.

Everything that enters facerig as a picture goes through :func:`load_image`, which returns an
``(H, W, 3) uint8`` RGB array (C-contiguous, writeable) or raises one of the typed errors of
:mod:`facerig.errors`:

* a path that does not exist -> :class:`~facerig.errors.InvalidInput` (names the path);
* bytes / a file that is not an image, is corrupt or truncated -> :class:`~facerig.errors.ImageUnreadable`;
* a header announcing more than ``max_pixels`` pixels -> :class:`~facerig.errors.ImageTooLarge`, raised
  from the header alone, before any pixel is decoded or allocated (Pillow opens lazily: only
  ``.size`` is read first). Pillow's own decompression-bomb warning/error is converted too;
* a side shorter than ``min_side`` -> :class:`~facerig.errors.ImageTooSmall`;
* a pixel mode (or array dtype/shape) that cannot be turned into RGB -> :class:`~facerig.errors.UnsupportedMode`.

Conversions (documented choices):

* EXIF orientation is applied (``ImageOps.exif_transpose``), so a phone photo comes out upright.
* Transparency (``LA``, ``La``, ``PA``, ``RGBA``, ``RGBa``, ``P``/``L``/``RGB`` with a ``transparency``
  key, 4-channel arrays) is **composited over white**: portraits with cut-out backgrounds then look as
  they do in a browser and the face detector sees a plain background instead of black.
* ``1``, ``L``, ``P``, ``CMYK``, ``YCbCr``, ``HSV``, ``RGBX`` -> Pillow's conversion to RGB.
* 16-bit (``I;16``, ``I;16B``, ``I;16L``, ``I;16N``) is scaled by its bit depth (``v * 255 / 65535``,
  rounded; a TIFF declaring fewer BitsPerSample, e.g. 12, is scaled by ``2**bits - 1``), never clipped
  at 255. ``I`` (32-bit signed int) is scaled by the bit depth the file states
  (PNG: 16; TIFF: BitsPerSample), or, when unknown, 16 bits if all values fit in ``[0, 65535]`` and 32
  bits otherwise; negative values become 0.
* ``F`` (32-bit float): values within ``[0, 1]`` are scaled by 255; any other range is min-max
  normalised (such files are usually depth or scientific data).
* ``LAB`` is refused (:class:`UnsupportedMode`): Pillow has no plain LAB -> RGB conversion.

Arrays: ``uint8``; ``uint16`` (scaled by 65535); ``bool``; other integer dtypes whose values lie in
``[0, 255]``; floats in ``[0, 1]`` (NaN/inf or values outside ``[0, 1]`` by more than 1e-3 ->
:class:`InvalidInput`). Shapes ``(H, W)``, ``(H, W, 1)``, ``(H, W, 3)`` (taken as RGB) and
``(H, W, 4)`` (RGBA). Channel-first arrays are refused rather than guessed; use :func:`from_tensor`.

Limits: ``max_pixels`` defaults to ``FACERIG_MAX_PIXELS`` from the environment or 100,000,000.
Pillow refuses on its own anything over ``2 * PIL.Image.MAX_IMAGE_PIXELS`` (about 179 M pixels) at
open time; that refusal is also reported as :class:`ImageTooLarge`, so a ``max_pixels`` above that
needs ``PIL.Image.MAX_IMAGE_PIXELS`` raised by the application.
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from facerig.errors import ImageTooLarge, ImageTooSmall, ImageUnreadable, InvalidInput, UnsupportedMode

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "DEFAULT_MIN_SIDE",
    "from_tensor",
    "load_alpha",
    "load_image",
    "max_pixels_limit",
    "save_image",
    "to_tensor",
]

DEFAULT_MAX_PIXELS = 100_000_000
DEFAULT_MIN_SIDE = 16

_PIL_TO_RGB = {"1", "L", "P", "RGB", "CMYK", "YCbCr", "HSV", "RGBX"}
_PIL_ALPHA = {"LA", "La", "PA", "RGBA", "RGBa"}
_PIL_16 = {"I;16", "I;16B", "I;16L", "I;16N"}


def max_pixels_limit(max_pixels: int | None = None) -> int:
    """The pixel limit in force: the argument, else ``FACERIG_MAX_PIXELS``, else 100,000,000."""
    if max_pixels is not None:
        return int(max_pixels)
    env = os.environ.get("FACERIG_MAX_PIXELS")
    if env:
        try:
            return int(float(env))
        except ValueError:
            raise InvalidInput("FACERIG_MAX_PIXELS", "an integer number of pixels", env) from None
    return DEFAULT_MAX_PIXELS


# --------------------------------------------------------------------------------------------
# loading


def load_image(
    source: Any,
    *,
    max_pixels: int | None = None,
    min_side: int = DEFAULT_MIN_SIDE,
    name: str | None = None,
) -> np.ndarray:
    """Decode ``source`` into an ``(H, W, 3) uint8`` RGB array.

    ``source``: a path (str / ``os.PathLike``), encoded bytes (``bytes``, ``bytearray``,
    ``memoryview``), a binary file object, a ``PIL.Image.Image``, a numpy array, or a torch tensor
    (``(3, H, W)`` / ``(1, 3, H, W)`` float in [0, 1], see :func:`from_tensor`).
    ``max_pixels``: largest ``W * H`` accepted (default: env ``FACERIG_MAX_PIXELS`` or 100 M).
    ``min_side``: shortest side accepted, in pixels. ``name``: how errors refer to the input.
    """
    limit = max_pixels_limit(max_pixels)
    if isinstance(source, np.ndarray):
        label = name or "image array"
        _check_array_shape(source, label)
        _check_size(label, source.shape[1], source.shape[0], limit, min_side)
        return _array_to_rgb(source, label)
    if _is_tensor(source):
        label = name or "image tensor"
        arr = from_tensor(source)
        _check_size(label, arr.shape[1], arr.shape[0], limit, min_side)
        return arr
    if isinstance(source, Image.Image):
        label = name or "PIL image"
        _check_size(label, source.size[0], source.size[1], limit, min_side)
        try:
            upright = ImageOps.exif_transpose(source) or source  # idempotent: the tag is dropped
        except (OSError, SyntaxError, ValueError) as e:
            raise ImageUnreadable(label, "a complete, uncorrupted image", _short(e)) from None
        except Exception:
            upright = source
        return _pil_to_rgb(upright, label, _declared_bits(source))

    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        label = name or str(path)
        if not path.exists():
            raise InvalidInput("image", "an existing image file", str(path), hint="no such file")
        if not path.is_file():
            raise InvalidInput("image", "an image file", str(path), hint="not a regular file")
        try:
            fp: Any = open(path, "rb")  # noqa: SIM115 - closed below
        except OSError as e:
            raise ImageUnreadable(label, "a readable image file", f"{type(e).__name__}: {e}") from None
    elif isinstance(source, (bytes, bytearray, memoryview)):
        label = name or "image bytes"
        if len(source) == 0:
            raise ImageUnreadable(label, "encoded image bytes", "0 bytes")
        fp = io.BytesIO(bytes(source))
    elif hasattr(source, "read"):
        label = name or str(getattr(source, "name", "image stream"))
        fp = source
    else:
        raise InvalidInput(
            name or "image", "a path, bytes, a file object, a PIL image, an array or a tensor",
            type(source).__name__,
        )

    try:
        return _decode(fp, label, limit, min_side)
    finally:
        if fp is not source:
            fp.close()


def load_alpha(path: str | os.PathLike[str]) -> np.ndarray | None:
    """The alpha channel ``(H, W) uint8`` of an image file with transparency (upright, as
    :func:`load_image` orients the pixels), or None when the file is opaque or unreadable (the
    pixels themselves are read, with their errors, by :func:`load_image`)."""
    try:
        with Image.open(path) as im:
            if im.mode not in _PIL_ALPHA and "transparency" not in im.info:
                return None
            up = ImageOps.exif_transpose(im) or im
            a = np.array(up.convert("RGBA"), dtype=np.uint8)[..., 3]
    except Exception:  # unreadable: load_image reports it
        return None
    return None if bool((a == 255).all()) else a


def _decode(fp: Any, label: str, limit: int, min_side: int) -> np.ndarray:
    try:
        with warnings.catch_warnings():
            # Our own header check below decides; Pillow's warning (> 89 M px) is noise here.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(fp)
    except Image.DecompressionBombError as e:
        raise ImageTooLarge(label, f"at most {limit} pixels", str(e)) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as e:
        raise ImageUnreadable(label, "a decodable image (PNG, JPEG, WebP, TIFF, BMP, GIF, ...)",
                              _short(e)) from None
    with im:
        # 1) the header: dimensions before any pixel is decoded
        w, h = im.size
        _check_size(label, w, h, limit, min_side)
        # 2) decode (first frame of animations / multi-page files)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                im.load()
        except Image.DecompressionBombError as e:
            raise ImageTooLarge(label, f"at most {limit} pixels", str(e)) from None
        except (OSError, SyntaxError, ValueError, EOFError, IndexError, MemoryError) as e:
            raise ImageUnreadable(label, "a complete, uncorrupted image", _short(e)) from None
        # 3) orientation
        try:
            im2 = ImageOps.exif_transpose(im)
        except Exception:  # a broken EXIF block must not make a readable image unreadable
            im2 = im
        bits = _declared_bits(im)
        return _pil_to_rgb(im2 if im2 is not None else im, label, bits)


def _short(e: BaseException) -> str:
    text = str(e).strip() or type(e).__name__
    return f"{type(e).__name__}: {text}" if type(e).__name__ not in text else text


def _check_size(label: str, w: int, h: int, limit: int, min_side: int) -> None:
    if w * h > limit:
        raise ImageTooLarge(
            label, f"at most {limit:,} pixels", f"{w}x{h} = {w * h:,}",
            hint="raise max_pixels / FACERIG_MAX_PIXELS if this image is trusted",
        )
    if min(w, h) < min_side:
        raise ImageTooSmall(label, f"both sides at least {min_side} px", f"{w}x{h}")


def _declared_bits(im: Image.Image) -> int | None:
    """Bits per sample stated by the file, where the format says it (PNG 16-bit gray, TIFF)."""
    fmt = (im.format or "").upper()
    if fmt == "PNG" and im.mode in ("I", *_PIL_16):
        return 16
    if fmt == "TIFF":
        try:
            b = im.tag_v2.get(258)  # type: ignore[attr-defined]  # BitsPerSample
        except AttributeError:
            return None
        if isinstance(b, tuple):
            b = b[0] if b else None
        return int(b) if b else None
    return None


def _pil_to_rgb(im: Image.Image, label: str, bits: int | None = None) -> np.ndarray:
    mode = im.mode
    try:
        if mode in _PIL_16:
            a = np.asarray(im).astype(np.float64)
            depth = bits if (bits is not None and 1 <= bits <= 16) else 16
            return _gray_to_rgb(_scale_to_u8(a, float(2**depth - 1)))
        if mode == "I":
            a = np.asarray(im).astype(np.float64)
            if bits is None or bits > 32:
                bits = 16 if (a.size == 0 or (a.min() >= 0 and a.max() <= 65535)) else 32
            full = float(2**31 - 1) if bits >= 32 else float(2**bits - 1)  # mode I is signed
            return _gray_to_rgb(_scale_to_u8(np.maximum(a, 0.0), full))
        if mode == "F":
            a = np.asarray(im).astype(np.float64)
            return _gray_to_rgb(_float_to_u8_any_range(a))
        if mode in _PIL_ALPHA or "transparency" in im.info:
            rgba = im.convert("RGBA") if mode != "RGBa" else im.convert("RGBA")
            return _composite_white(np.asarray(rgba))
        if mode in _PIL_TO_RGB:
            return np.array(im.convert("RGB"), dtype=np.uint8, order="C")
    except (OSError, ValueError) as e:
        raise ImageUnreadable(label, "a decodable image", _short(e)) from None
    raise UnsupportedMode(label, "a pixel mode convertible to RGB (1, L, LA, P, RGB, RGBA, CMYK, YCbCr, "
                          "I;16, I, F, ...)", mode)


def _scale_to_u8(a: np.ndarray, full_scale: float) -> np.ndarray:
    return np.clip(np.rint(a * (255.0 / full_scale)), 0, 255).astype(np.uint8)


def _float_to_u8_any_range(a: np.ndarray) -> np.ndarray:
    finite = np.isfinite(a)
    if not finite.any():
        return np.zeros(a.shape, np.uint8)
    a = np.where(finite, a, 0.0)
    lo, hi = float(a[finite].min()), float(a[finite].max())
    if lo >= 0.0 and hi <= 1.0:
        return _scale_to_u8(a, 1.0)
    span = hi - lo
    return _scale_to_u8((a - lo) / span if span > 0 else np.zeros_like(a), 1.0)


def _gray_to_rgb(g: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.repeat(g[:, :, None], 3, axis=2))


def _composite_white(rgba: np.ndarray) -> np.ndarray:
    """uint8 (H, W, 4) straight alpha -> uint8 (H, W, 3) over a white background."""
    rgb = rgba[..., :3].astype(np.float32)
    alpha = rgba[..., 3:4].astype(np.float32) / 255.0
    out = rgb * alpha + 255.0 * (1.0 - alpha)
    return np.ascontiguousarray(np.clip(np.rint(out), 0, 255).astype(np.uint8))


def _check_array_shape(a: np.ndarray, label: str) -> None:
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (1, 3, 4)):
        raise UnsupportedMode(label, "an array of shape (H, W), (H, W, 1), (H, W, 3) or (H, W, 4)",
                              a.shape, hint="channel-first tensors go through from_tensor")


def _array_to_rgb(a: np.ndarray, label: str) -> np.ndarray:
    """Numpy array (see the module docstring for what is accepted) -> uint8 (H, W, 3) RGB."""
    _check_array_shape(a, label)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    kind = a.dtype.kind
    if a.dtype == np.uint8:
        u8 = a
    elif kind == "b":
        u8 = a.astype(np.uint8) * 255
    elif a.dtype == np.uint16:
        u8 = _scale_to_u8(a.astype(np.float64), 65535.0)
    elif kind in "iu":
        lo, hi = (int(a.min()), int(a.max())) if a.size else (0, 0)
        if lo < 0 or hi > 255:
            raise InvalidInput(label, "integer pixel values in [0, 255] (or a uint16 array)",
                               f"{a.dtype} values in [{lo}, {hi}]")
        u8 = a.astype(np.uint8)
    elif kind == "f":
        if a.size and not np.isfinite(a).all():
            raise InvalidInput(label, "finite float pixel values in [0, 1]", "NaN or inf values")
        flo, fhi = (float(a.min()), float(a.max())) if a.size else (0.0, 0.0)
        if flo < -1e-3 or fhi > 1.0 + 1e-3:
            raise InvalidInput(label, "float pixel values in [0, 1]", f"values in [{flo:.4g}, {fhi:.4g}]",
                               hint="divide 0-255 floats by 255")
        u8 = _scale_to_u8(a.astype(np.float64), 1.0)
    else:
        raise UnsupportedMode(label, "a uint8, uint16, bool, integer or float array", str(a.dtype))
    if u8.ndim == 2:
        return _gray_to_rgb(u8)
    if u8.shape[2] == 4:
        return _composite_white(u8)
    return np.array(u8, dtype=np.uint8, order="C", copy=True)


# --------------------------------------------------------------------------------------------
# tensors


def _is_tensor(x: Any) -> bool:
    t = type(x)
    return t.__module__.startswith("torch") and t.__name__ in ("Tensor", "Parameter")


def to_tensor(image: np.ndarray, device: Any = None, dtype: Any = None) -> Any:
    """uint8 (H, W, 3) RGB array (or anything :func:`load_image` accepts as an array) ->
    float tensor (1, 3, H, W) in [0, 1] (float32 unless ``dtype`` says otherwise)."""
    import torch

    a = image if (isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 3
                  and image.shape[2] == 3) else _array_to_rgb(np.asarray(image), "image")
    t = torch.from_numpy(np.ascontiguousarray(a)).permute(2, 0, 1).unsqueeze(0)
    return t.to(device=device, dtype=dtype or torch.float32).div_(255.0)


def from_tensor(tensor: Any) -> np.ndarray:
    """Float tensor (1, 3, H, W) or (3, H, W) in [0, 1] (1 channel allowed) -> uint8 (H, W, 3).

    Values are clamped to [0, 1] and rounded. A batch of more than one image is refused.
    """
    t = tensor.detach()
    if t.ndim == 4:
        if t.shape[0] != 1:
            raise InvalidInput("tensor", "a single image (1, 3, H, W)", tuple(t.shape),
                               hint="index the batch first")
        t = t[0]
    if t.ndim != 3 or t.shape[0] not in (1, 3):
        raise InvalidInput("tensor", "an image tensor of shape (1, 3, H, W) or (3, H, W)", tuple(t.shape))
    if t.is_floating_point():
        a = (t.float().clamp(0, 1) * 255.0).round().to("cpu").numpy().astype(np.uint8)
    else:
        a = t.to("cpu").numpy()
        a = _array_to_rgb(np.moveaxis(a, 0, -1), "tensor")
        return a
    a = np.moveaxis(a, 0, -1)
    if a.shape[2] == 1:
        a = np.repeat(a, 3, axis=2)
    return np.ascontiguousarray(a)


# --------------------------------------------------------------------------------------------
# saving


def save_image(path: str | os.PathLike[str], image: Any, *, quality: int = 95) -> Path:
    """Write an image; the format follows the extension (``.png``, ``.jpg``, ``.webp``, ...).

    ``image``: anything :func:`load_image` accepts as an in-memory image (uint8/uint16/float array,
    gray or RGB(A), PIL image, float tensor (1, 3, H, W) / (3, H, W) in [0, 1]). RGBA arrays keep
    their alpha channel when the format supports it (PNG, WebP, TIFF). Parent folders are created.
    ``quality`` applies to lossy formats (JPEG, WebP). Returns the path written.
    """
    p = Path(path)
    if _is_tensor(image):
        arr = from_tensor(image)
    elif isinstance(image, Image.Image):
        arr = None
        im = image
    else:
        a = np.asarray(image)
        ext = p.suffix.lower()
        if a.ndim == 3 and a.shape[2] == 4 and a.dtype == np.uint8 and ext in (".png", ".webp", ".tif", ".tiff"):
            arr = None
            im = Image.fromarray(np.ascontiguousarray(a), "RGBA")
        else:
            arr = _array_to_rgb(a, "image")
    if arr is not None:
        im = Image.fromarray(arr, "RGB")
    p.parent.mkdir(parents=True, exist_ok=True)
    kwargs: dict[str, Any] = {}
    fmt = Image.registered_extensions().get(p.suffix.lower())
    if fmt is None:
        raise InvalidInput("path", "a file name with an image extension (.png, .jpg, .webp, ...)", str(p))
    if fmt in ("JPEG", "WEBP"):
        kwargs["quality"] = int(quality)
        if im.mode not in ("RGB", "L") and fmt == "JPEG":
            im = im.convert("RGB")
    im.save(p, format=fmt, **kwargs)
    return p
