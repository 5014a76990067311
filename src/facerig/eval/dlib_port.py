"""A differentiable PyTorch port of dlib's face-recognition ResNet (``dlib_face_recognition_resnet_model_v1``).

What this module holds:

* :func:`parse_dlib_net` reads dlib's serialized ``anet_type`` file (the one shipped in the
  ``face_recognition_models`` wheel) with our own reader of dlib's binary format; no dlib needed.
* :class:`DlibResNet` is the network rebuilt in torch (29 conv layers, batch-norm folded into the
  convolutions, 150x150 RGB chips -> 128-d descriptor); :func:`load_dlib_resnet` converts the file
  once and caches the result as safetensors in ``facerig.io.assets.user_cache_dir()/dlib``.
* :func:`face_chip_geometry` / :func:`extract_face_chip` reproduce ``dlib.get_face_chip(img, shape,
  size=150, padding=0.25)`` (similarity fit to dlib's 5-point mean face, the same chip rectangle,
  the same ``pyramid_down<2>`` anti-aliasing levels and the same bilinear sampling), in torch so
  that gradients flow to the image (and the landmarks).

Facts about the file format (learned from dlib's public sources and by reading the binary):

* integers: one byte ``n`` (low nibble = number of little-endian magnitude bytes, bit 0x80 = negative)
  followed by ``n & 15`` bytes; floats/doubles: two such integers, mantissa and base-2 exponent;
  strings: length integer + bytes; bools: one ASCII byte ``'0'``/``'1'``;
* tensors: version integer (2), the 4 dims (num_samples, k, nr, nc) and then ``prod(dims)`` raw
  little-endian float32; alias tensors: version (1) + the 4 dims;
* layers are written outermost first (``loss_metric_2``, then the version numbers of every wrapping
  layer), then the input layer, then each layer's details from the input up: ``con_4``
  (params = filters (out, in, kh, kw) then biases, num_filters, nr, nc, strides, paddings, aliases,
  4 learning-rate doubles), ``affine_`` (params = gamma then beta: batch-norm folded to scale/shift),
  ``relu_``, ``max_pool_2`` / ``avg_pool_2`` (nr, nc, strides, paddings; nr = 0 = global),
  ``add_prev_`` and ``fc_2`` (num_outputs, num_inputs, a (num_inputs, num_outputs) weight matrix,
  bias mode; this net has no fc bias).

Network semantics mirrored: input ``(pixel - mean_rgb) / 256`` with dlib's stored means
(122.782, 117.001, 104.298); convolutions are cross-correlations with the stored paddings (0 for the
strided ones); a residual ``add_prev`` of tensors of different shapes zero-pads both to the larger
channels/rows/columns (aligned at the top-left), which happens in the down-sampling blocks.
"""

from __future__ import annotations

import builtins
import hashlib
import importlib.util
import math
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from facerig.detect.crops import umeyama_similarity
from facerig.errors import AssetMissing, InvalidInput

__all__ = [
    "DLIB_MEAN_FACE_5",
    "DlibResNet",
    "ChipGeometry",
    "dlib_model_path",
    "parse_dlib_net",
    "convert_dlib_net",
    "load_dlib_resnet",
    "face_chip_geometry",
    "extract_face_chip",
    "ESTIMATOR_PORT",
]

ESTIMATOR_PORT = "dlib_resnet_v1 torch port (facerig; weights from face_recognition_models 0.3.0)"

# dlib's 5-point mean face (get_face_chip_details, 5-point branch), in chip units [0, 1] before padding.
# Point order of shape_predictor_5_face_landmarks: 0/1 = outer/inner corner of the eye on the image's
# right (the subject's left), 2/3 = outer/inner corner of the eye on the image's left, 4 = nose base.
DLIB_MEAN_FACE_5 = np.array(
    [
        [0.8595674595992, 0.2134981538014],
        [0.6460604764104, 0.2289674387677],
        [0.1205750620789, 0.2137274526848],
        [0.3340850613712, 0.2290642403242],
        [0.4901123135679, 0.6277975316475],
    ]
)

CACHE_FORMAT = "facerig.dlib_resnet/1"


def dlib_model_path(name: str = "dlib_face_recognition_resnet_model_v1.dat") -> Path:
    """Path of a model file shipped by the ``face_recognition_models`` wheel (found without importing
    it: its ``__init__`` imports ``pkg_resources``, which recent setuptools no longer has)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise AssetMissing(
            f"dlib model file {name}", "the face_recognition_models package",
            "pip install face_recognition_models==0.3.0 (extra 'identity')",
        )
    for loc in spec.submodule_search_locations:
        p = Path(loc) / "models" / name
        if p.is_file():
            return p
    raise AssetMissing(f"dlib model file {name}", str(list(spec.submodule_search_locations)),
                       "reinstall face_recognition_models==0.3.0")


# ------------------------------------------------------------------------------------------
# dlib binary format


class _Reader:
    def __init__(self, data: bytes):
        self.b = data
        self.pos = 0

    def int(self) -> int:
        head = self.b[self.pos]
        n = head & 0x0F
        if n > 8:
            raise InvalidInput("dlib net file", "a dlib integer", f"size byte {head:#x} at {self.pos}")
        val = int.from_bytes(self.b[self.pos + 1:self.pos + 1 + n], "little")
        self.pos += 1 + n
        return -val if head & 0x80 else val

    def float(self) -> float:
        mantissa = self.int()
        exponent = self.int()
        if exponent >= 32000:  # dlib's markers for inf/nan
            return math.inf if mantissa >= 0 else -math.inf
        return math.ldexp(mantissa, exponent)

    def string(self) -> str:
        n = self.int()
        s = self.b[self.pos:self.pos + n]
        self.pos += n
        return s.decode("latin-1")

    def tensor(self) -> np.ndarray:
        version = self.int()
        if version != 2:
            raise InvalidInput("dlib net file", "tensor version 2", version)
        dims = [self.int() for _ in range(4)]
        count = int(np.prod(dims))
        arr = np.frombuffer(self.b, dtype="<f4", count=count, offset=self.pos).copy()
        self.pos += 4 * count
        return arr.reshape(dims)

    def alias(self) -> tuple[builtins.int, ...]:  # `int` is the method above here
        version = self.int()
        if version != 1:
            raise InvalidInput("dlib net file", "alias_tensor version 1", version)
        return tuple(self.int() for _ in range(4))


@dataclass
class DlibLayer:
    kind: str  # input | con | affine | relu | max_pool | avg_pool | add_prev | fc
    tensors: dict[str, np.ndarray] = field(default_factory=dict)
    attrs: dict[str, Any] = field(default_factory=dict)


_LAYER_NAMES = ("input_rgb_image_sized", "con_4", "con_5", "affine_", "relu_", "max_pool_2", "avg_pool_2",
                "add_prev_", "fc_2")


def _parse_details(r: _Reader, name: str) -> DlibLayer:
    if name == "input_rgb_image_sized":
        means = [r.float(), r.float(), r.float()]
        nr, nc = r.int(), r.int()
        return DlibLayer("input", attrs={"mean_rgb": means, "size": (nr, nc)})
    if name in ("con_4", "con_5"):
        params = r.tensor().reshape(-1)
        nf, nr, nc, sy, sx, py, px = (r.int() for _ in range(7))
        falias = r.alias()
        r.alias()  # biases alias (follows the filters in params)
        _ = [r.float() for _ in range(4)]
        use_bias = True
        if name == "con_5":
            use_bias = r.b[r.pos:r.pos + 1] == b"1"
            r.pos += 1
        nw = int(np.prod(falias))
        w = params[:nw].reshape(falias)
        b = params[nw:nw + nf] if use_bias and params.size >= nw + nf else np.zeros(nf, np.float32)
        if (falias[0], falias[2], falias[3]) != (nf, nr, nc):
            raise InvalidInput("dlib net file", f"con filters ({nf}, k, {nr}, {nc})", falias)
        return DlibLayer("con", {"weight": w, "bias": b}, {"stride": (sy, sx), "padding": (py, px)})
    if name == "affine_":
        params = r.tensor().reshape(-1)
        g = r.alias()
        _ = r.alias()
        _mode = r.int()
        n = int(np.prod(g))
        return DlibLayer("affine", {"gamma": params[:n], "beta": params[n:2 * n]})
    if name == "relu_":
        return DlibLayer("relu")
    if name in ("max_pool_2", "avg_pool_2"):
        nr, nc, sy, sx, py, px = (r.int() for _ in range(6))
        return DlibLayer(name[:-2], attrs={"size": (nr, nc), "stride": (sy, sx), "padding": (py, px)})
    if name == "add_prev_":
        return DlibLayer("add_prev")
    if name == "fc_2":
        nout, nin = r.int(), r.int()
        params = r.tensor().reshape(-1)
        walias = r.alias()
        _ = r.alias()
        bias_mode = r.int()
        _ = [r.float() for _ in range(4)]
        nw = int(np.prod(walias))
        w = params[:nw].reshape(nin, nout)  # dlib computes x (1 x nin) @ W (nin x nout)
        b = params[nw:nw + nout] if bias_mode == 0 else np.zeros(nout, np.float32)
        return DlibLayer("fc", {"weight": w.T.copy(), "bias": b})
    raise InvalidInput("dlib net file", "a known layer", name)


def parse_dlib_net(path: str | Path | None = None) -> list[DlibLayer]:
    """Read a dlib ``anet_type``-style network file into a list of layers, input first.

    Every layer's details start with its version string; the bytes between two layers' details
    (the wrapping layers' bools and empty gradient tensors, tags and skips) are stepped over, and
    must stay small (a guard against reading float data as structure)."""
    p = Path(path) if path is not None else dlib_model_path()
    data = p.read_bytes()
    r = _Reader(data)
    _version = r.int()  # add_loss_layer's version
    head = r.string()
    if not head.startswith("loss_metric"):
        raise InvalidInput(str(p), "a dlib metric-learning network (loss_metric_*)", head)
    patterns = {n: bytes([1, len(n)]) + n.encode() for n in _LAYER_NAMES}
    layers: list[DlibLayer] = []
    max_gap = None  # the first gap (outer versions) may be long; later ones are short
    while True:
        end = len(data) if max_gap is None else r.pos + max_gap + 32
        hits = [(data.find(pat, r.pos, end), n) for n, pat in patterns.items()]
        hits = [(i, n) for i, n in hits if i >= 0]
        if not hits:
            break
        i, n = min(hits)
        if max_gap is not None and i - r.pos > max_gap:
            raise InvalidInput(str(p), "a contiguous dlib layer stream", f"{i - r.pos} unexplained bytes at {r.pos}")
        r.pos = i + len(patterns[n])
        layers.append(_parse_details(r, n))
        max_gap = 256
    if not layers or layers[0].kind != "input" or layers[-1].kind != "fc":
        raise InvalidInput(str(p), "input ... fc layers", [lay.kind for lay in layers[:3]])
    return layers


# ------------------------------------------------------------------------------------------
# the network


def _pad_add(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """dlib's add_prev: zero-pad both to the larger (channels, rows, cols), aligned top-left."""
    if a.shape == b.shape:
        return a + b
    c, h, w = (max(a.shape[i], b.shape[i]) for i in (1, 2, 3))

    def pad(x: torch.Tensor) -> torch.Tensor:
        return F.pad(x, (0, w - x.shape[3], 0, h - x.shape[2], 0, c - x.shape[1]))

    return pad(a) + pad(b)


class _Block(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, pad1: int, pad2: int, down: bool):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, pad1)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, pad2)
        self.down = down

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv2(F.relu(self.conv1(x)))
        skip = F.avg_pool2d(x, 2, 2) if self.down else x
        return F.relu(_pad_add(skip, y))


class DlibResNet(nn.Module):
    """dlib's face-recognition ResNet in torch (affine/batch-norm layers folded into the convs).

    ``forward(chips)``: (B, 3, 150, 150) float RGB in [0, 1] (a dlib face chip / 255) -> (B, 128)
    descriptors in dlib's units (not normalised; the same-person threshold is L2 0.6). Keys:
    ``stem.weight/bias``, ``blocks.{i}.conv{1,2}.weight/bias``, ``fc.weight``, buffer ``mean_rgb``.
    """

    mean_rgb: torch.Tensor  # buffer

    # (out_channels, down) of the 14 residual blocks of dlib's dnn_face_recognition_ex anet_type
    BLOCKS = ((32, False),) * 3 + ((64, True),) + ((64, False),) * 3 + ((128, True),) + ((128, False),) * 2 \
        + ((256, True),) + ((256, False),) * 2 + ((256, True),)

    def __init__(self, blocks: tuple[tuple[int, bool], ...] | None = None, stem_channels: int = 32,
                 embedding_dim: int = 128, input_size: int = 150):
        super().__init__()
        blocks = blocks or self.BLOCKS
        self.input_size = input_size
        self.register_buffer("mean_rgb", torch.tensor([122.782, 117.001, 104.298]))
        self.stem = nn.Conv2d(3, stem_channels, 7, 2, 0)
        mods = []
        cin = stem_channels
        for cout, down in blocks:
            mods.append(_Block(cin, cout, 2 if down else 1, 0 if down else 1, 1, down))
            cin = cout
        self.blocks = nn.ModuleList(mods)
        self.fc = nn.Linear(cin, embedding_dim, bias=False)

    def forward(self, chips: torch.Tensor) -> torch.Tensor:
        if chips.ndim != 4 or chips.shape[1] != 3:
            raise InvalidInput("chips", "a (B, 3, 150, 150) tensor", tuple(chips.shape))
        x = (chips * 255.0 - self.mean_rgb.view(1, 3, 1, 1).to(chips)) / 256.0
        x = F.max_pool2d(F.relu(self.stem(x)), 3, 2)
        for blk in self.blocks:
            x = blk(x)
        return self.fc(x.mean(dim=(2, 3)))


def convert_dlib_net(layers: list[DlibLayer]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Map parsed dlib layers onto :class:`DlibResNet`'s state dict (folding each affine into the
    conv before it). Checks the layer sequence: input, con, affine, relu, max_pool, then per block
    con, affine, relu, con, affine, [avg_pool], add_prev, relu, and finally a global avg_pool, fc."""
    seq = [lay.kind for lay in layers]
    it = iter(layers)

    def take(kind: str) -> DlibLayer:
        lay = next(it)
        if lay.kind != kind:
            raise InvalidInput("dlib net file", f"a {kind} layer", f"{lay.kind} in {seq}")
        return lay

    def fold(con: DlibLayer, aff: DlibLayer) -> tuple[torch.Tensor, torch.Tensor]:
        g = aff.tensors["gamma"].astype(np.float64)
        w = con.tensors["weight"].astype(np.float64) * g[:, None, None, None]
        b = con.tensors["bias"].astype(np.float64) * g + aff.tensors["beta"].astype(np.float64)
        return torch.from_numpy(w.astype(np.float32)), torch.from_numpy(b.astype(np.float32))

    inp = take("input")
    sd: dict[str, torch.Tensor] = {"mean_rgb": torch.tensor(inp.attrs["mean_rgb"], dtype=torch.float32)}
    c0 = take("con")
    sd["stem.weight"], sd["stem.bias"] = fold(c0, take("affine"))
    take("relu")
    mp = take("max_pool")
    if mp.attrs["size"] != (3, 3) or mp.attrs["stride"] != (2, 2) or c0.attrs["stride"] != (2, 2):
        raise InvalidInput("dlib net file", "a 7x7/2 conv stem and a 3x3/2 max pool", (c0.attrs, mp.attrs))
    blocks: list[tuple[int, bool]] = []
    i = 0
    rest = layers[5:]
    pos = 0
    while rest[pos].kind == "con":
        c1, a1, r1, c2, a2 = rest[pos:pos + 5]
        if [x.kind for x in (a1, r1, c2, a2)] != ["affine", "relu", "con", "affine"]:
            raise InvalidInput("dlib net file", "con affine relu con affine", [x.kind for x in rest[pos:pos + 5]])
        pos += 5
        down = rest[pos].kind == "avg_pool"
        if down:
            pos += 1
        if rest[pos].kind != "add_prev" or rest[pos + 1].kind != "relu":
            raise InvalidInput("dlib net file", "add_prev relu after a block", rest[pos].kind)
        pos += 2
        if (c1.attrs["stride"] == (2, 2)) != down:
            raise InvalidInput("dlib net file", "stride-2 convs exactly in the down-sampling blocks", i)
        sd[f"blocks.{i}.conv1.weight"], sd[f"blocks.{i}.conv1.bias"] = fold(c1, a1)
        sd[f"blocks.{i}.conv2.weight"], sd[f"blocks.{i}.conv2.bias"] = fold(c2, a2)
        blocks.append((int(c1.tensors["weight"].shape[0]), down))
        i += 1
    gp, fc = rest[pos], rest[pos + 1]
    if gp.kind != "avg_pool" or gp.attrs["size"] != (0, 0) or fc.kind != "fc" or pos + 2 != len(rest):
        raise InvalidInput("dlib net file", "a global avg_pool then fc at the end", [x.kind for x in rest[pos:]])
    sd["fc.weight"] = torch.from_numpy(fc.tensors["weight"].astype(np.float32))
    meta = {"blocks": blocks, "stem_channels": int(c0.tensors["weight"].shape[0]),
            "embedding_dim": int(fc.tensors["weight"].shape[0]), "input_size": inp.attrs["size"][0],
            "num_conv": 1 + 2 * len(blocks)}
    return sd, meta


def _file_digest(p: Path) -> str:
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _cache_file(source: Path) -> Path:
    from facerig.io.assets import user_cache_dir

    st = source.stat()
    tag = hashlib.sha1(f"{source.resolve()}:{st.st_size}:{int(st.st_mtime)}".encode()).hexdigest()[:12]
    return user_cache_dir() / "dlib" / f"dlib_resnet_v1-{tag}.safetensors"


@lru_cache(maxsize=4)
def _load_cached(path_str: str, use_cache: bool) -> tuple[dict[str, torch.Tensor], tuple[tuple[int, bool], ...]]:
    from safetensors.torch import load_file, save_file

    source = Path(path_str)
    cache = _cache_file(source) if use_cache else None
    if cache is not None and cache.is_file():
        try:
            sd = load_file(str(cache))
            blocks = tuple((int(sd[f"blocks.{i}.conv1.weight"].shape[0]), int(sd[f"_down.{i}"]) == 1)
                           for i in range(sum(1 for k in sd if k.startswith("_down."))))
            return {k: v for k, v in sd.items() if not k.startswith("_down.")}, blocks
        except Exception:  # noqa: BLE001 - a broken cache is rebuilt
            pass
    sd, meta = convert_dlib_net(parse_dlib_net(source))
    blocks = tuple(meta["blocks"])
    if cache is not None:
        try:
            cache.parent.mkdir(parents=True, exist_ok=True)
            extra = {f"_down.{i}": torch.tensor([int(d)]) for i, (_, d) in enumerate(blocks)}
            tmp = cache.with_suffix(".tmp")
            save_file({**sd, **extra}, str(tmp), metadata={"format": CACHE_FORMAT, "source": source.name,
                                                            "source_sha256": _file_digest(source)})
            tmp.replace(cache)
        except OSError:
            pass
    return sd, blocks


def load_dlib_resnet(path: str | Path | None = None, *, use_cache: bool = True, device: Any = None) -> DlibResNet:
    """Build :class:`DlibResNet` with dlib's weights (converted at first use, then read from the cache)."""
    source = Path(path) if path is not None else dlib_model_path()
    if not source.is_file():
        raise AssetMissing(f"dlib network file {source.name}", str(source), "give the path of a dlib .dat network")
    sd, blocks = _load_cached(str(source.resolve()), use_cache)
    net = DlibResNet(blocks=blocks, stem_channels=int(sd["stem.weight"].shape[0]),
                     embedding_dim=int(sd["fc.weight"].shape[0]))
    net.load_state_dict(sd, strict=True)
    net.eval().requires_grad_(False)
    return net.to(device) if device is not None else net


# ------------------------------------------------------------------------------------------
# face chips, exactly as dlib.get_face_chip


@dataclass
class ChipGeometry:
    """dlib's chip_details for one face plus what extraction needs.

    ``center`` (2,) image point of the chip centre; ``angle`` radians; ``width`` the chip rectangle's
    width in image pixels (dlib's drectangle width = right - left + 1); ``level`` the pyramid level
    dlib samples from (-1 = the image itself); ``bbox`` (l, t, r, b) integer region dlib builds the
    pyramid over; ``size`` chip side.
    """

    center: np.ndarray
    angle: float
    width: float
    size: int
    level: int
    bbox: tuple[int, int, int, int]


def _point_down(p: np.ndarray) -> np.ndarray:
    return p / 2.0 - np.array([1.25, 0.75])


def face_chip_geometry(points5: np.ndarray, image_hw: tuple[int, int], size: int = 150,
                       padding: float = 0.25) -> ChipGeometry:
    """dlib's ``get_face_chip_details`` for 5 landmarks in dlib pixel coordinates (pixel centres
    at integers; facerig frame coordinates minus 0.5), plus the pyramid level and region dlib's
    ``extract_image_chips`` uses."""
    pts = np.asarray(points5, dtype=np.float64).reshape(5, 2)
    src = (padding + DLIB_MEAN_FACE_5) / (2 * padding + 1) * size
    m = umeyama_similarity(src, pts)
    p = m[:, :2] @ np.array([1.0, 0.0])
    angle = math.atan2(p[1], p[0])
    scale = float(np.hypot(*p))
    center = m[:, :2] @ np.array([size / 2.0, size / 2.0]) + m[:, 2]
    width = size * scale
    half = (width - 1) / 2.0
    tl, br = center - half, center + half
    # pyramid depth: levels while the rect_down'ed rectangle is larger than the chip
    area = size * size

    def rect_area(a: np.ndarray, b: np.ndarray) -> float:
        return float(max(b[0] - a[0] + 1, 0) * max(b[1] - a[1] + 1, 0))

    depth, grow = 0, 2.0
    a, b = _point_down(tl), _point_down(br)
    while rect_area(a, b) > area:
        a, b = _point_down(a), _point_down(b)
        depth += 1
        grow = grow * 2 + 2
    # rotated rect bounding box, grown, intersected with the image, made integer
    c, s = math.cos(angle), math.sin(angle)
    rot = np.array([[c, -s], [s, c]])
    corners = np.array([[tl[0], tl[1]], [br[0], tl[1]], [tl[0], br[1]], [br[0], br[1]]])
    rc = (corners - center) @ rot.T + center
    lo, hi = rc.min(0) - grow, rc.max(0) + grow
    h, w = image_hw
    lo = np.maximum(lo, 0.0)
    hi = np.minimum(hi, [w - 1.0, h - 1.0])
    bbox = tuple(int(v) for v in np.floor(np.array([lo[0], lo[1], hi[0], hi[1]]) + 0.5))
    # level actually used, with the rectangle translated into the bbox's frame
    level = -1
    a, b = tl - bbox[:2], br - bbox[:2]
    while rect_area(_point_down(a), _point_down(b)) > area:
        level += 1
        a, b = _point_down(a), _point_down(b)
    return ChipGeometry(center, angle, float(width), size, level, bbox)  # type: ignore[arg-type]


_PYR_K = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0])


def _floor_st(x: torch.Tensor) -> torch.Tensor:
    """floor() with a straight-through gradient (dlib stores 8-bit pixels between steps)."""
    return x + (torch.floor(x) - x).detach()


def _pyramid_down(img: torch.Tensor, quantize: bool) -> torch.Tensor:
    """dlib pyramid_down<2> on (B, C, H, W) pixel values 0..255: 5-tap [1 4 6 4 1] filter, valid,
    stride 2, output ((H-3)//2, (W-3)//2); integer division by 256 when ``quantize``."""
    b, c, h, w = img.shape
    k = _PYR_K.to(img)
    kk = (k[:, None] * k[None, :]).expand(c, 1, 5, 5)
    out = F.conv2d(img, kk, stride=2, groups=c) / 256.0
    oh, ow = (h - 3) // 2, (w - 3) // 2
    out = out[:, :, :oh, :ow]
    return _floor_st(out) if quantize else out


def _chip_grid(center: torch.Tensor, angle: torch.Tensor, width: torch.Tensor, size: int, level: int,
               bbox: tuple[int, int, int, int]) -> torch.Tensor:
    """Image points (size, size, 2) sampled by dlib for the chip, in the frame of the pyramid level."""
    dev, dt = center.device, center.dtype
    half = (width - 1) / 2.0
    tl = center - half - torch.tensor(bbox[:2], dtype=dt, device=dev)
    br = center + half - torch.tensor(bbox[:2], dtype=dt, device=dev)
    off = torch.tensor([1.25, 0.75], dtype=dt, device=dev)
    for _ in range(level + 1):
        tl, br = tl / 2 - off, br / 2 - off
    ctr = (tl + br) / 2
    k = (br - tl) / (size - 1)  # per chip pixel, x and y
    ij = torch.arange(size, dtype=dt, device=dev) - (size - 1) / 2.0
    yy, xx = torch.meshgrid(ij, ij, indexing="ij")
    c, s = torch.cos(angle), torch.sin(angle)
    dx, dy = xx * k[0], yy * k[1]
    px = ctr[0] + c * dx - s * dy
    py = ctr[1] + s * dx + c * dy
    return torch.stack([px, py], -1)


def _bilinear_dlib(img: torch.Tensor, pts: torch.Tensor) -> torch.Tensor:
    """dlib interpolate_bilinear: (C, H, W) at points (S, S, 2) pixel coords; 0 where the 2x2
    neighbourhood leaves the image."""
    c, h, w = img.shape
    gx = pts[..., 0] / max(w - 1, 1) * 2 - 1
    gy = pts[..., 1] / max(h - 1, 1) * 2 - 1
    grid = torch.stack([gx, gy], -1)[None].to(img.dtype)
    out = F.grid_sample(img[None], grid, mode="bilinear", padding_mode="zeros", align_corners=True)[0]
    fx, fy = torch.floor(pts[..., 0].detach()), torch.floor(pts[..., 1].detach())
    valid = (fx >= 0) & (fy >= 0) & (fx + 1 < w) & (fy + 1 < h)
    return out * valid.to(out.dtype)


def extract_face_chip(image: torch.Tensor | np.ndarray, points5: torch.Tensor | np.ndarray, size: int = 150,
                      padding: float = 0.25, *, quantize: bool = True, antialias: bool = True) -> torch.Tensor:
    """``dlib.get_face_chip(image, shape, size, padding)`` in torch.

    ``image``: (3, H, W) float tensor in [0, 1] (differentiable) or an (H, W, 3) uint8 array;
    ``points5``: (5, 2) dlib 5-point landmarks in dlib pixel coordinates (tensor: gradients flow
    through the similarity fit too). Returns (3, size, size) in [0, 1]. ``quantize`` rounds to 8 bits
    at the points dlib does (pyramid levels, final chip) with straight-through gradients;
    ``antialias`` uses dlib's pyramid levels (False: plain bilinear, aliases on large faces).
    """
    if isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[2] != 3:
            raise InvalidInput("image", "an (H, W, 3) array", image.shape)
        img = torch.from_numpy(np.array(image, copy=True)).permute(2, 0, 1).float()
    else:
        if image.ndim != 3 or image.shape[0] != 3:
            raise InvalidInput("image", "a (3, H, W) tensor", tuple(image.shape))
        img = image * 255.0
    h, w = img.shape[1:]
    pts_t = torch.as_tensor(points5, dtype=torch.float64)
    geo = face_chip_geometry(pts_t.detach().cpu().numpy(), (h, w), size, padding)
    level = geo.level if antialias else -1
    bbox = geo.bbox if antialias else (0, 0, w - 1, h - 1)
    if pts_t.requires_grad:
        center, angle, width = _torch_geometry(pts_t, size, padding)
    else:
        center = torch.tensor(geo.center, dtype=torch.float64)
        angle = torch.tensor(geo.angle, dtype=torch.float64)
        width = torch.tensor(geo.width, dtype=torch.float64)
    sub = img[:, bbox[1]:bbox[3] + 1, bbox[0]:bbox[2] + 1]
    src = sub
    for _ in range(level + 1):
        src = _pyramid_down(src[None], quantize)[0]
    grid = _chip_grid(center.to(img.device), angle.to(img.device), width.to(img.device), size, level, bbox)
    chip = _bilinear_dlib(src, grid)
    if quantize:
        chip = _floor_st(chip.clamp(0, 255))  # dlib truncates when storing the 8-bit chip
    return chip / 255.0


def _torch_geometry(pts: torch.Tensor, size: int, padding: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Differentiable centre, angle, width of dlib's chip rectangle from 5 landmarks."""
    src = torch.as_tensor((padding + DLIB_MEAN_FACE_5) / (2 * padding + 1) * size, dtype=pts.dtype)
    ms, md = src.mean(0), pts.mean(0)
    s0, d0 = src - ms, pts - md
    # closed-form 2D similarity: [a -b; b a]
    den = (s0 ** 2).sum()
    a = (s0 * d0).sum() / den
    b = (s0[:, 0] * d0[:, 1] - s0[:, 1] * d0[:, 0]).sum() / den
    rm = torch.stack([torch.stack([a, -b]), torch.stack([b, a])])
    t = md - rm @ ms
    center = rm @ torch.tensor([size / 2.0, size / 2.0], dtype=pts.dtype) + t
    return center, torch.atan2(b, a), size * torch.sqrt(a * a + b * b)
