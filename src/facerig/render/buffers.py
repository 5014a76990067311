"""Physical buffers (DECA-compatible) of a fitted face: normal, albedo, shading, render, depth, ...

``render_buffers(model, params)`` poses the model's mesh, projects it with the params' camera into the
crop (``space="crop"``, ``size`` x ``size``) or, through ``params.crop``, into the original frame
(``space="frame"``), rasterises it and interpolates per-vertex attributes. Conventions:

* ``normal`` world-space unit normals (area-weighted vertex normals of the posed mesh, interpolated,
  re-normalised); ``normal_camera`` the same in OpenCV camera axes (x right, y down, z away);
* ``shading`` DECA's SH irradiance evaluated on the interpolated UNnormalised normal;
  ``render = albedo * shading`` (no clamp, no gamma);
* ``albedo`` from ``params.albedo`` (per vertex), else ``params.texture`` sampled per pixel at the
  interpolated model uv (bilinear), else ``model.default_albedo``;
* ``depth_raw`` the rasteriser depth in pixel units of the output space (the camera's depth
  coordinate from :func:`facerig.render.camera.project` times size/2, divided by the crop scale in
  frame space; larger = nearer); ``depth`` = that depth min-max normalised over the covered pixels of
  each image (1 = nearest, farthest covered = 0, background 0);
* ``mask`` coverage; ``uv`` model uv; ``regions`` one-hot of ``model.face_region``;
* every buffer is 0 on the background; all are channels-first (B, C, H, W) tensors.

Gradients flow (pixel interiors) to the vertices, albedo/texture, light and camera.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

import numpy as np
import torch
import torch.nn.functional as F

from facerig.errors import InvalidInput
from facerig.render import camera as cam
from facerig.render.raster import (
    Fragments,
    interpolate_packed,
    rasterize,
    scatter_pixels,
    vertex_normals,
)
from facerig.render.shading import sh_basis_rows
from facerig.types import FaceParams, RenderBuffers

if TYPE_CHECKING:
    from facerig.morphable.base import FaceModel

SPACES = ("crop", "frame")


def screen_vertices(
    world: torch.Tensor, params: FaceParams, size: int = 256, space: str = "crop"
) -> tuple[torch.Tensor, tuple[int, int]]:
    """World vertices (B, V, 3) -> screen (B, V, 3) (pixel x, pixel y, depth in pixels, larger =
    nearer) of the output space, and the output (height, width)."""
    ndc = cam.project(world, params.camera.to(world.device), params.camera_kind, params.focal)
    if space == "crop":
        xy = cam.ndc_to_pixels(ndc[..., :2], size)
        z = ndc[..., 2:] * (size / 2.0)
        return torch.cat([xy, z], -1), (size, size)
    if params.crop is None:
        raise InvalidInput(
            "space", "'crop' when params.crop is None (frame rendering needs the crop transforms)", space
        )
    sizes = {tuple(int(s) for s in c.frame_size) for c in params.crop}
    if len(sizes) != 1:
        raise InvalidInput(
            "space",
            "'crop', or 'frame' only for batches whose frames share one size (render the items separately)",
            f"frame with sizes {sorted(sizes)}",
        )
    hw = cast(tuple[int, int], sizes.pop())  # frame_size is (height, width)
    dt, dev = world.dtype, world.device
    half = torch.tensor([c.size / 2.0 for c in params.crop], dtype=dt, device=dev)[:, None, None]
    inv = torch.from_numpy(np.stack([c.inverse_matrix for c in params.crop])).to(
        device=dev, dtype=dt
    )  # (B, 2, 3)
    scale = torch.tensor([c.scale for c in params.crop], dtype=dt, device=dev)[:, None, None]
    crop_xy = (ndc[..., :2] + 1.0) * half
    xy = crop_xy @ inv[:, :, :2].transpose(1, 2) + inv[:, None, :, 2]
    z = ndc[..., 2:] * half / scale
    return torch.cat([xy, z], -1), hw


def _texture_albedo(texture: torch.Tensor, uv: torch.Tensor, counts: list[int]) -> torch.Tensor:
    """Sample (B, 3, T, T) textures at packed uv rows (2, P) (v up) -> rows (3, P), bilinear."""
    grid = torch.stack([uv[0] * 2 - 1, 1 - uv[1] * 2], -1)  # (P, 2)
    out = []
    start = 0
    for b, n in enumerate(counts):
        if n:
            g = grid[start : start + n].reshape(1, 1, n, 2)
            s = F.grid_sample(
                texture[b : b + 1], g, mode="bilinear", padding_mode="border", align_corners=False
            )
            out.append(s[0, :, 0])
        start += n
    if not out:
        return uv.new_zeros(texture.shape[1], 0)
    return torch.cat(out, 1)


def _segment_matmul(mats: torch.Tensor, x: torch.Tensor, counts: list[int]) -> torch.Tensor:
    """Per-item matrix (B, C, K) times the columns of x (K, P) sorted by item -> (C, P)."""
    if len(counts) == 1:
        return mats[0] @ x
    parts = []
    start = 0
    for b, n in enumerate(counts):
        if n:
            parts.append(mats[b] @ x[:, start : start + n])
        start += n
    if not parts:
        return x.new_zeros(mats.shape[1], 0)
    return torch.cat(parts, 1)


def render_buffers(
    model: FaceModel,
    params: FaceParams,
    size: int = 256,
    space: str = "crop",
    vertices: torch.Tensor | None = None,
    backend: str = "auto",
    fragments_out: list[Fragments] | None = None,
) -> RenderBuffers:
    """Render the physical buffers of ``params`` with face ``model``.

    ``size``: crop side in pixels (``space="crop"``); in ``space="frame"`` the output has the frames'
    size (``params.crop[i].frame_size``, equal across the batch) and the crop pixels are those of each
    CropTransform's own ``size``. ``vertices`` (B, V, 3) head-frame vertices to use instead of
    ``model(identity, expression, jaw_pose)``. ``backend``: rasteriser backend. ``fragments_out``: if
    a list is given, the rasteriser Fragments are appended to it.
    """
    if space not in SPACES:
        raise InvalidInput("space", f"one of {SPACES}", space)
    if space == "crop" and (not isinstance(size, int) or size <= 0):
        raise InvalidInput("size", "a positive integer number of pixels", size)
    if vertices is None:
        vertices = model(params.identity, params.expression, params.jaw_pose)
    if vertices.ndim != 3 or vertices.shape[-1] != 3 or vertices.shape[0] != params.batch_size:
        raise InvalidInput("vertices", f"a ({params.batch_size}, V, 3) tensor", tuple(vertices.shape))
    dtype = torch.promote_types(vertices.dtype, params.camera.dtype)
    dev = vertices.device
    verts = vertices.to(dtype)
    faces = model.faces.to(device=dev, dtype=torch.long)
    bsz = verts.shape[0]

    world = cam.pose_vertices(verts, params.rotation.to(device=dev, dtype=dtype))
    screen, (h, w) = screen_vertices(world, params, size, space)
    frags = rasterize(screen, faces, h, w, backend=backend)
    if fragments_out is not None:
        fragments_out.append(frags)
    packed = frags.get_packed()
    counts = packed.counts(bsz)

    # one gather for all per-vertex attributes: normal (3), uv (2) [, albedo (3)]
    normals_v = vertex_normals(world, faces)
    uv_v = model.uv.to(device=dev, dtype=dtype)[None].expand(bsz, -1, -1)
    attrs = [normals_v, uv_v]
    albedo_src = "vertex"
    if params.albedo is not None:
        alb_v = params.albedo.to(device=dev, dtype=dtype)
        if alb_v.shape != (bsz, verts.shape[1], 3):
            raise InvalidInput("params.albedo", f"a ({bsz}, {verts.shape[1]}, 3) tensor", tuple(alb_v.shape))
        attrs.append(alb_v)
    elif params.texture is not None:
        albedo_src = "texture"
    else:
        attrs.append(model.default_albedo.to(device=dev, dtype=dtype)[None].expand(bsz, -1, -1))
    vals = interpolate_packed(torch.cat(attrs, -1), faces, frags)  # rows (8, P) or (5, P)
    n_raw = vals[0:3]
    uv = vals[3:5]
    if albedo_src == "texture":
        assert params.texture is not None  # albedo_src == "texture" only when it is set
        albedo = _texture_albedo(params.texture.to(device=dev, dtype=dtype), uv, counts)
    else:
        albedo = vals[5:8]

    nx, ny, nz = n_raw[0], n_raw[1], n_raw[2]
    inv_len = torch.rsqrt((nx * nx + ny * ny + nz * nz).clamp_min(1e-24))
    normal = n_raw * inv_len
    normal_cam = (
        normal * torch.tensor([1.0, -1.0, -1.0], dtype=dtype, device=dev)[:, None]
    )  # = world_to_opencv_camera
    light = params.light.to(device=dev, dtype=dtype)  # (B, 9, 3)
    basis = sh_basis_rows(n_raw)  # (9, P)
    shade = _segment_matmul(light.transpose(1, 2), basis, counts)  # (3, P)
    render = albedo * shade

    z = packed.zbuf.to(dtype)
    init = z.new_full((bsz,), float("inf"))
    zmin = init.scatter_reduce(0, packed.batch, z, "amin", include_self=True)
    zmax = (-init).scatter_reduce(0, packed.batch, z, "amax", include_self=True)
    rng = zmax - zmin
    flat = rng <= 0
    rng = torch.where(flat, torch.ones_like(rng), rng)
    depth = ((z - zmin[packed.batch]) / rng[packed.batch]).clamp(0, 1)
    depth = torch.where(flat[packed.batch], torch.ones_like(depth), depth)

    stacked = torch.cat([normal, normal_cam, albedo, shade, render, depth[None], z[None], uv], 0)  # (19, P)
    img = scatter_pixels(stacked, packed, bsz, h, w)
    mask = (frags.face_index >= 0).to(dtype)[:, None]

    names = tuple(getattr(model, "region_names", ()) or ())
    regions = torch.zeros(bsz, len(names), h * w, dtype=dtype, device=dev)
    if names and packed.face.numel():
        reg = model.face_region.to(dev)[packed.face]
        regions[packed.batch, reg, packed.local] = 1.0
    regions = regions.reshape(bsz, len(names), h, w)

    return RenderBuffers(
        normal=img[:, 0:3],
        normal_camera=img[:, 3:6],
        albedo=img[:, 6:9],
        shading=img[:, 9:12],
        render=img[:, 12:15],
        depth=img[:, 15:16],
        depth_raw=img[:, 16:17],
        uv=img[:, 17:19],
        mask=mask,
        regions=regions,
        region_names=names,
        face_index=frags.face_index,
        bary=frags.bary,
        space=space,
    )
