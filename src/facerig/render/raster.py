"""Triangle rasteriser: a non-differentiable visibility pass plus differentiable barycentrics.

Screen space (the input of :func:`rasterize`): ``screen`` (B, V, 3) holds continuous pixel x, pixel y
(x right, y down; pixel ``(i, j)`` covers ``[j, j+1) x [i, i+1)`` and is sampled at its centre
``(j + 0.5, i + 0.5)``) and a depth where LARGER = NEARER.

Two stages:

1. **Visibility** (no gradients): which triangle covers each pixel centre. Three backends share one
   exact rule and give identical answers:

   * ``"numba"``: a z-buffer compiled with numba (CPU); single-threaded for small work, parallel
     over (item, row band) for large batches (``NUMBA_PARALLEL_MIN_PIXELS``); deterministic;
   * ``"torch"``: any device; enumerates the pixels of each triangle's bounding box and keeps, per
     pixel, the maximum of a packed (depth, -triangle index) int64 key with ``scatter_reduce``;
   * ``"reference"``: plain Python loops over pixels and triangles (slow; for tests).

   Rule: edge functions are evaluated in float64 with a canonical origin per edge (so the two
   triangles sharing an edge compute exactly opposite values), both windings are accepted (unless
   ``cull`` is given), a centre exactly on an edge belongs to the triangle for which that edge is a
   "top-left" edge (so shared edges are covered exactly once), depth is compared after rounding
   to float32 and ties go to the LOWER triangle index.

2. **Barycentrics** (differentiable): recomputed in torch from the winning triangle's screen
   coordinates at the pixel centres, so gradients flow to the vertex positions (pixel-interior
   gradients; silhouettes are not differentiated). Barycentrics are screen-space (affine), not
   perspective-correct: exact for the weak-perspective camera, a small error inside a triangle for
   the perspective one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from facerig.errors import InvalidInput

BACKENDS = ("auto", "numba", "torch", "reference")
CULL = (None, "back", "front")

# per-triangle setup table: for each edge k (opposite vertex k) 6 columns
# (origin x, origin y, dx, dy, sign, top-left flag), then A (= |2 * area|), za, zb, zc
_NCOL = 22
_INT64_MIN = -(2**63)
_LOW = 2**32


@dataclass
class PackedFragments:
    """The covered pixels of a :class:`Fragments`, in row-major order over (B, H, W).

    ``pixel`` (P,) flat index into B*H*W; ``batch`` (P,) item (sorted); ``local`` (P,) index into
    H*W; ``face`` (P,) triangle; ``weights`` (3, P) barycentrics (differentiable, one row per
    triangle corner); ``zbuf`` (P,) depth (differentiable).
    """

    pixel: torch.Tensor
    batch: torch.Tensor
    local: torch.Tensor
    face: torch.Tensor
    weights: torch.Tensor
    zbuf: torch.Tensor

    @property
    def bary(self) -> torch.Tensor:
        """(P, 3) view of ``weights``."""
        return self.weights.T

    def counts(self, batch_size: int) -> list[int]:
        """Covered pixels per batch item."""
        return torch.bincount(self.batch, minlength=batch_size).tolist()


@dataclass
class Fragments:
    """Rasteriser output.

    * ``face_index`` (B, H, W) long: triangle covering the pixel centre, -1 for background;
    * ``bary`` (B, H, W, 3): barycentric weights of the triangle's 3 vertices (background 0);
    * ``zbuf`` (B, H, W): interpolated screen depth, larger = nearer (background 0: use
      ``face_index >= 0``).

    ``bary`` and ``zbuf`` are differentiable w.r.t. the screen coordinates. ``packed`` holds the
    same data for the covered pixels only (used by :func:`interpolate`).
    """

    face_index: torch.Tensor
    bary: torch.Tensor
    zbuf: torch.Tensor
    packed: PackedFragments | None = field(default=None, repr=False)

    @property
    def mask(self) -> torch.Tensor:
        """(B, H, W) bool coverage."""
        return self.face_index >= 0

    @property
    def shape(self) -> tuple[int, int, int]:
        b, h, w = self.face_index.shape
        return int(b), int(h), int(w)

    def get_packed(self) -> PackedFragments:
        if self.packed is None:
            b, h, w = self.shape
            fi = self.face_index.reshape(-1)
            pixel = torch.nonzero(fi >= 0).squeeze(1)
            self.packed = PackedFragments(
                pixel=pixel,
                batch=torch.div(pixel, h * w, rounding_mode="floor"),
                local=pixel % (h * w),
                face=fi[pixel],
                weights=self.bary.reshape(-1, 3)[pixel].T,
                zbuf=self.zbuf.reshape(-1)[pixel],
            )
        return self.packed


# ------------------------------------------------------------------------------------------
# triangle setup (shared by the numba and torch backends)


def _triangle_setup(
    screen: torch.Tensor, faces: torch.Tensor, height: int, width: int, cull: str | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """float64 table (B, F, 22) and int64 pixel boxes (B, F, 4) = (i0, i1, j0, j1), empty = i1 < i0."""
    s = screen.detach().to(torch.float64)
    tri = s[:, faces]  # (B, F, 3, 3)
    x, y, z = tri[..., 0], tri[..., 1], tri[..., 2]
    one = torch.ones((), dtype=torch.float64, device=s.device)
    edges = []
    for k in range(3):
        p, q = (k + 1) % 3, (k + 2) % 3
        px_, py_, qx_, qy_ = x[..., p], y[..., p], x[..., q], y[..., q]
        pfirst = (px_ < qx_) | ((px_ == qx_) & (py_ <= qy_))
        ox = torch.where(pfirst, px_, qx_)
        oy = torch.where(pfirst, py_, qy_)
        dx = torch.where(pfirst, qx_ - px_, px_ - qx_)
        dy = torch.where(pfirst, qy_ - py_, py_ - qy_)
        cs = torch.where(pfirst, one, -one)
        edges.append((ox, oy, dx, dy, cs))
    ox2, oy2, dx2, dy2, cs2 = edges[2]
    area = cs2 * (dx2 * (y[..., 2] - oy2) - dy2 * (x[..., 2] - ox2))
    sgn = torch.sign(area)
    big = torch.abs(area)
    cols = []
    for ox, oy, dx, dy, cs in edges:
        sg = sgn * cs
        odx, ody = sg * dx, sg * dy
        tl = ((ody > 0) | ((ody == 0) & (odx < 0))).to(torch.float64)
        cols += [ox, oy, dx, dy, sg, tl]
    cols += [big, z[..., 0], z[..., 1], z[..., 2]]
    tab = torch.stack(cols, -1)

    valid = torch.isfinite(tri).all(-1).all(-1) & (big > 0)
    if cull == "back":  # front-facing (CCW seen from +z in a y-up world) has area < 0 in pixels
        valid &= area < 0
    elif cull == "front":
        valid &= area > 0
    xs = torch.nan_to_num(x, nan=0.0)
    ys = torch.nan_to_num(y, nan=0.0)
    j0 = torch.ceil(xs.amin(-1) - 0.5).clamp(-1, width)
    j1 = torch.floor(xs.amax(-1) - 0.5).clamp(-1, width)
    i0 = torch.ceil(ys.amin(-1) - 0.5).clamp(-1, height)
    i1 = torch.floor(ys.amax(-1) - 0.5).clamp(-1, height)
    box = torch.stack(
        [i0.clamp_min(0), i1.clamp_max(height - 1), j0.clamp_min(0), j1.clamp_max(width - 1)], -1
    )
    box = box.to(torch.int64)
    empty = ~valid | (box[..., 1] < box[..., 0]) | (box[..., 3] < box[..., 2])
    box[..., 0] = torch.where(empty, torch.ones_like(box[..., 0]), box[..., 0])
    box[..., 1] = torch.where(empty, torch.zeros_like(box[..., 1]), box[..., 1])
    return tab, box


# ------------------------------------------------------------------------------------------
# numba backend

_numba_mod = None

#: the numba pass runs multi-threaded only from this many pixels (B*H*W) up. Small work runs on the
#: calling thread: numba's and torch's OpenMP pools are distinct, and handing a tiny job to a second
#: pool while torch's threads still spin costs more (up to a scheduler tick) than the job itself.
NUMBA_PARALLEL_MIN_PIXELS = 1 << 21


def _numba_module():  # noqa: ANN202
    global _numba_mod
    if _numba_mod is None:
        from facerig.render import _zbuffer_numba

        _numba_mod = _zbuffer_numba
    return _numba_mod


def numba_available() -> bool:
    try:
        _numba_module()
    except ImportError:
        return False
    return True


def _visibility_numba(tab: torch.Tensor, box: torch.Tensor, height: int, width: int) -> torch.Tensor:
    mod = _numba_module()
    b = tab.shape[0]
    tab_np = np.ascontiguousarray(tab.cpu().numpy())
    box_np = np.ascontiguousarray(box.cpu().numpy())
    face_index = np.empty((b, height, width), dtype=np.int64)
    zbuf = np.empty((b, height, width), dtype=np.float32)
    import numba

    threads = numba.get_num_threads()
    if threads <= 1 or b * height * width < NUMBA_PARALLEL_MIN_PIXELS:
        mod.zbuffer_serial(tab_np, box_np, height, width, face_index, zbuf)
    else:
        # enough row bands that every thread has work, few enough that per-band overhead stays small
        nbands = max(1, min(height, math.ceil(4 * threads / b)))
        mod.zbuffer(tab_np, box_np, height, width, nbands, face_index, zbuf)
    return torch.from_numpy(face_index)


# ------------------------------------------------------------------------------------------
# torch backend


def _visibility_torch(
    tab: torch.Tensor, box: torch.Tensor, height: int, width: int, chunk: int = 1 << 22
) -> torch.Tensor:
    b, f = box.shape[:2]
    dev = tab.device
    tab_rows = tab.reshape(b * f, _NCOL).T.contiguous()  # (22, B*F)
    box = box.reshape(b * f, 4)
    nh = (box[:, 1] - box[:, 0] + 1).clamp_min(0)
    nw = (box[:, 3] - box[:, 2] + 1).clamp_min(0)
    cnt = nh * nw
    keys = torch.full((b * height * width,), _INT64_MIN, dtype=torch.int64, device=dev)
    # split the triangles into chunks of at most ~chunk candidate pixels (bounded memory)
    csum = torch.cumsum(cnt, 0)
    total = int(csum[-1]) if csum.numel() else 0
    bounds = [0]
    if total > chunk:
        marks = torch.arange(chunk, total, chunk, device=dev)
        bounds += torch.searchsorted(csum, marks, right=True).tolist()
    bounds.append(b * f)
    bounds = sorted(set(bounds))
    tri_ids = torch.arange(b * f, device=dev)
    for t0, t1 in zip(bounds[:-1], bounds[1:], strict=False):
        c = cnt[t0:t1]
        n = int(c.sum())
        if n == 0:
            continue
        tid = torch.repeat_interleave(tri_ids[t0:t1], c, output_size=n)
        start = torch.cumsum(c, 0) - c
        loc = torch.arange(n, device=dev) - start.index_select(0, tid - t0)
        w = nw.index_select(0, tid)
        q = torch.div(loc, w, rounding_mode="floor")
        row = box[:, 0].index_select(0, tid) + q
        col = box[:, 2].index_select(0, tid) + (loc - q * w)
        px = col.to(torch.float64) + 0.5
        py = row.to(torch.float64) + 0.5
        inside = None
        es = []
        for k in range(3):
            ox, oy, dx, dy, sg, tl = (tab_rows[6 * k + m].index_select(0, tid) for m in range(6))
            e = sg * (dx * (py - oy) - dy * (px - ox))
            ok = (e > 0) | ((e == 0) & (tl > 0))
            inside = ok if inside is None else inside & ok
            es.append(e)
        assert inside is not None  # set by the 3 iterations above
        sel = torch.nonzero(inside).squeeze(1)
        if sel.numel() == 0:
            continue
        e0, e1, e2 = es[0][sel], es[1][sel], es[2][sel]
        tsel = tid[sel]
        a, za, zb, zc = (tab_rows[m].index_select(0, tsel) for m in range(18, 22))
        z = (e0 / a) * za + (e1 / a) * zb + (e2 / a) * zc
        z32 = z.to(torch.float32) + 0.0  # -0.0 -> +0.0
        bits = z32.view(torch.int32)
        order = torch.where(bits >= 0, bits, bits ^ 0x7FFFFFFF).to(torch.int64)
        bi = torch.div(tsel, f, rounding_mode="floor")
        fi = tsel - bi * f
        key = order * _LOW + (_LOW - 1 - fi)
        pix = (bi * height + row[sel]) * width + col[sel]
        keys.scatter_reduce_(0, pix, key, "amax", include_self=True)
    covered = keys != _INT64_MIN
    face = (_LOW - 1) - torch.bitwise_and(keys, _LOW - 1)
    return torch.where(covered, face, torch.full_like(face, -1)).reshape(b, height, width)


# ------------------------------------------------------------------------------------------
# slow reference


def _edge_ref(ax: float, ay: float, bx: float, by: float) -> tuple[float, float, float, float, float]:
    """Canonical origin/direction of the edge a->b: (ox, oy, dx, dy, sign)."""
    if ax < bx or (ax == bx and ay <= by):
        return ax, ay, bx - ax, by - ay, 1.0
    return bx, by, ax - bx, ay - by, -1.0


def rasterize_reference(
    screen: torch.Tensor, faces: torch.Tensor, height: int, width: int, cull: str | None = None
) -> torch.Tensor:
    """Obviously-correct visibility with Python loops: face_index (B, H, W) long. Slow."""
    s = screen.detach().to(torch.float64).cpu().numpy()
    fc = faces.detach().cpu().numpy().astype(np.int64)
    b = s.shape[0]
    out = np.full((b, height, width), -1, dtype=np.int64)
    for bi in range(b):
        tris = []
        for f, (ia, ib, ic) in enumerate(fc):
            pts = [s[bi, ia], s[bi, ib], s[bi, ic]]
            if not all(math.isfinite(float(v)) for p in pts for v in p):
                continue
            xs = [float(p[0]) for p in pts]
            ys = [float(p[1]) for p in pts]
            zs = [float(p[2]) for p in pts]
            raw = []
            for k in range(3):
                p, q = (k + 1) % 3, (k + 2) % 3
                raw.append(_edge_ref(xs[p], ys[p], xs[q], ys[q]))
            ox, oy, dx, dy, cs = raw[2]
            area = cs * (dx * (ys[2] - oy) - dy * (xs[2] - ox))
            if area == 0:
                continue
            if cull == "back" and area > 0:
                continue
            if cull == "front" and area < 0:
                continue
            sgn = 1.0 if area > 0 else -1.0
            edges = []
            for ox, oy, dx, dy, cs in raw:
                sg = sgn * cs
                odx, ody = sg * dx, sg * dy
                top_left = ody > 0 or (ody == 0 and odx < 0)
                edges.append((ox, oy, dx, dy, sg, top_left))
            tris.append((f, edges, abs(area), zs))
        for i in range(height):
            py = i + 0.5
            for j in range(width):
                px = j + 0.5
                best = None
                for f, edges, a, zs in tris:
                    es = []
                    for ox, oy, dx, dy, sg, top_left in edges:
                        e = sg * (dx * (py - oy) - dy * (px - ox))
                        if e < 0 or (e == 0 and not top_left):
                            break
                        es.append(e)
                    else:
                        z = float(np.float32((es[0] / a) * zs[0] + (es[1] / a) * zs[1] + (es[2] / a) * zs[2]))
                        if best is None or z > best[0] or (z == best[0] and f < best[1]):
                            best = (z, f)
                if best is not None:
                    out[bi, i, j] = best[1]
    return torch.from_numpy(out).to(screen.device)


# ------------------------------------------------------------------------------------------
# public API


def _check(
    screen: torch.Tensor, faces: torch.Tensor, height: int, width: int, backend: str, cull: str | None
) -> None:
    if not isinstance(screen, torch.Tensor) or screen.ndim != 3 or screen.shape[-1] != 3:
        raise InvalidInput(
            "screen", "a (B, V, 3) tensor of pixel x, pixel y, depth", getattr(screen, "shape", screen)
        )
    if not torch.is_floating_point(screen):
        raise InvalidInput("screen", "a floating-point tensor", screen.dtype)
    if not isinstance(faces, torch.Tensor) or faces.ndim != 2 or faces.shape[-1] != 3:
        raise InvalidInput("faces", "an (F, 3) integer tensor", getattr(faces, "shape", faces))
    if int(height) <= 0 or int(width) <= 0:
        raise InvalidInput("height/width", "positive image sizes", (height, width))
    if backend not in BACKENDS:
        raise InvalidInput("backend", f"one of {BACKENDS}", backend)
    if cull not in CULL:
        raise InvalidInput("cull", f"one of {CULL}", cull)
    if faces.numel() and (int(faces.min()) < 0 or int(faces.max()) >= screen.shape[1]):
        raise InvalidInput(
            "faces", f"vertex indices in [0, {screen.shape[1]})", (int(faces.min()), int(faces.max()))
        )


def visibility(
    screen: torch.Tensor,
    faces: torch.Tensor,
    height: int,
    width: int,
    backend: str = "auto",
    cull: str | None = None,
) -> torch.Tensor:
    """Non-differentiable visibility pass only: face_index (B, H, W) long, -1 = background."""
    _check(screen, faces, height, width, backend, cull)
    faces = faces.to(device=screen.device, dtype=torch.long)
    height, width = int(height), int(width)
    b = screen.shape[0]
    if b == 0 or faces.shape[0] == 0:
        return torch.full((b, height, width), -1, dtype=torch.long, device=screen.device)
    if backend == "reference":
        return rasterize_reference(screen, faces, height, width, cull)
    if backend == "auto":
        backend = "numba" if screen.device.type == "cpu" and numba_available() else "torch"
    tab, box = _triangle_setup(screen, faces, height, width, cull)
    if backend == "numba":
        return _visibility_numba(tab, box, height, width).to(screen.device)
    return _visibility_torch(tab, box, height, width)


def barycentrics(screen: torch.Tensor, faces: torch.Tensor, face_index: torch.Tensor) -> Fragments:
    """Differentiable screen-space barycentrics and depth for a given visibility ``face_index``.

    Per triangle, the barycentrics are affine in the pixel position: ``w_k(p) = [k == 0] +
    b_k (p_x - x_0) + c_k (p_y - y_0)``; the small per-triangle coefficient table is built with
    autograd and gathered once per covered pixel.
    """
    b, h, w = face_index.shape
    faces = faces.to(device=screen.device, dtype=torch.long)
    nf = faces.shape[0]
    fi = face_index.reshape(-1)
    pixel = torch.nonzero(fi >= 0).squeeze(1)
    batch = torch.div(pixel, h * w, rounding_mode="floor")
    local = pixel - batch * (h * w)
    face = fi[pixel]
    row = torch.div(local, w, rounding_mode="floor")
    col = local - row * w

    tri = screen[:, faces]  # (B, F, 3, 3)
    x, y, z = tri[..., 0], tri[..., 1], tri[..., 2]
    x0, x1, x2 = x.unbind(-1)
    y0, y1, y2 = y.unbind(-1)
    area = (x1 - x0) * (y2 - y0) - (x2 - x0) * (y1 - y0)
    area = torch.where(area == 0, torch.full_like(area, 1e-30), area)
    bk = torch.stack([y1 - y2, y2 - y0, y0 - y1], 0) / area  # (3, B, F)
    ck = torch.stack([x2 - x1, x0 - x2, x1 - x0], 0) / area
    zt = z.permute(2, 0, 1)  # (3, B, F)
    table = torch.cat(
        [x0[None], y0[None], bk, ck, zt[0:1], (bk * zt).sum(0, keepdim=True), (ck * zt).sum(0, keepdim=True)],
        0,
    ).reshape(11, b * nf)
    g = table.index_select(1, batch * nf + face)  # (11, P)
    dx = (col.to(screen.dtype) + 0.5) - g[0]
    dy = (row.to(screen.dtype) + 0.5) - g[1]
    wts = g[2:5] * dx + g[5:8] * dy
    wts = wts + torch.tensor([1.0, 0.0, 0.0], dtype=wts.dtype, device=wts.device)[:, None]
    z_p = g[8] + g[9] * dx + g[10] * dy
    packed = PackedFragments(pixel=pixel, batch=batch, local=local, face=face, weights=wts, zbuf=z_p)
    bary = wts.new_zeros(b * h * w, 3).index_copy_(0, pixel, wts.T).reshape(b, h, w, 3)
    zbuf = z_p.new_zeros(b * h * w).index_copy_(0, pixel, z_p).reshape(b, h, w)
    return Fragments(face_index=face_index, bary=bary, zbuf=zbuf, packed=packed)


def rasterize(
    screen: torch.Tensor,
    faces: torch.Tensor,
    height: int,
    width: int,
    backend: str = "auto",
    cull: str | None = None,
) -> Fragments:
    """Rasterise triangles given in screen space.

    ``screen`` (B, V, 3): pixel x, pixel y (continuous, pixel centres at +0.5), depth (larger =
    nearer); ``faces`` (F, 3) vertex indices. ``backend``: "auto" (numba on CPU when importable, else
    torch), "numba", "torch" or "reference". ``cull``: None (both windings drawn), "back" or "front"
    (facing defined for counter-clockwise-outside triangles in the y-up world, i.e. clockwise on
    screen = front). Returns :class:`Fragments` (face_index, differentiable bary and zbuf).
    """
    face_index = visibility(screen, faces, height, width, backend, cull)
    return barycentrics(screen, faces, face_index)


def scatter_pixels(rows: torch.Tensor, packed: PackedFragments, b: int, h: int, w: int) -> torch.Tensor:
    """Packed per-pixel values in channel-major rows (C, P) -> image (B, C, H, W), background 0.

    Differentiable w.r.t. ``rows``.
    """
    c = rows.shape[0]
    out = rows.new_zeros(b, c, h * w)
    if b == 1:
        out[0].index_copy_(1, packed.local, rows)
    else:
        start = 0
        for i, n in enumerate(packed.counts(b)):
            if n:
                out[i].index_copy_(1, packed.local[start : start + n], rows[:, start : start + n])
            start += n
    return out.reshape(b, c, h, w)


def interpolate_packed(attributes: torch.Tensor, faces: torch.Tensor, fragments: Fragments) -> torch.Tensor:
    """Per-vertex attributes (B, V, C) or (V, C) -> channel-major rows (C, P) at the covered pixels."""
    p = fragments.get_packed()
    faces = faces.to(device=attributes.device, dtype=torch.long)
    nf = faces.shape[0]
    c = attributes.shape[-1]
    if attributes.ndim == 2 or attributes.shape[0] == 1:
        a = attributes if attributes.ndim == 2 else attributes[0]
        table = a[faces].permute(1, 2, 0).reshape(3 * c, nf)  # rows: corner-major, then channel
        g = table.index_select(1, p.face)
    else:
        bsz = attributes.shape[0]
        table = attributes[:, faces].permute(2, 3, 0, 1).reshape(3 * c, bsz * nf)
        g = table.index_select(1, p.batch * nf + p.face)
    wts = p.weights.to(attributes.dtype)
    return g[0:c] * wts[0:1] + g[c : 2 * c] * wts[1:2] + g[2 * c :] * wts[2:3]


def interpolate(attributes: torch.Tensor, faces: torch.Tensor, fragments: Fragments) -> torch.Tensor:
    """Barycentric interpolation of per-vertex attributes (B, V, C) or (V, C) -> (B, C, H, W).

    Background pixels are 0. Differentiable w.r.t. the attributes and (through the barycentrics)
    the screen coordinates.
    """
    if attributes.ndim not in (2, 3):
        raise InvalidInput("attributes", "a (B, V, C) or (V, C) tensor", tuple(attributes.shape))
    b, h, w = fragments.shape
    if attributes.ndim == 3 and attributes.shape[0] not in (1, b):
        raise InvalidInput("attributes", f"batch size 1 or {b}", attributes.shape[0])
    rows = interpolate_packed(attributes, faces, fragments)
    return scatter_pixels(rows, fragments.get_packed(), b, h, w)


def vertex_normals(vertices: torch.Tensor, faces: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Area-weighted, normalised vertex normals (B, V, 3) of (B, V, 3) vertices.

    Triangles are counter-clockwise seen from outside, so normals point outwards. Differentiable.
    """
    squeeze = vertices.ndim == 2
    v = vertices[None] if squeeze else vertices
    faces = faces.to(device=v.device, dtype=torch.long)
    a, b_, c = v[:, faces[:, 0]], v[:, faces[:, 1]], v[:, faces[:, 2]]
    fn = torch.cross(b_ - a, c - a, dim=-1)  # length = 2 * area: area weighting
    n = torch.zeros_like(v)
    idx = faces.reshape(-1)
    n = n.index_add(1, idx, fn[:, :, None, :].expand(-1, -1, 3, -1).reshape(v.shape[0], -1, 3))
    n = n / n.norm(dim=-1, keepdim=True).clamp_min(eps)
    return n[0] if squeeze else n
