"""Photometric fit: SH lighting (DECA convention) and albedo against the image, given the geometry.

Per image: render normals and regions into the crop, take visible skin pixels (eroded coverage,
no eyes/brows/lips/mouth), solve a linear least-squares problem for the 9x3 SH coefficients with an
albedo of 1 (IRLS with Huber weights, so hair strands, specular spots and cast shadows count less),
then split the per-channel scale into a skin albedo colour and a white light (the split is ambiguous
from one image; the documented choice: the light is white and its shading averages 1 over the visible skin). Per-vertex albedo = image colour / shading at visible vertices, diffused over the mesh to
the unseen ones; an optional UV texture is unwrapped the same way with a validity mask.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from facerig.morphable.base import FaceModel
from facerig.render.camera import pose_vertices
from facerig.types import FaceParams

log = logging.getLogger(__name__)

SKIN_EXCLUDE = ("eyes", "brows", "lips", "mouth_interior", "iris")


def _skin_mask(buf: Any, erode: int = 2) -> torch.Tensor:
    m = buf.mask.clone()
    for name in SKIN_EXCLUDE:
        if name in buf.region_names:
            m = m * (1 - buf.region(name))
    if erode > 0:
        m = -torch.nn.functional.max_pool2d(-m, 2 * erode + 1, stride=1, padding=erode)
    return m[:, 0] > 0.5


def _sh_design(normals: torch.Tensor) -> torch.Tensor:
    from facerig.render.shading import sh_basis

    return sh_basis(normals)  # (..., 9), constants included


def fit_light(normals: torch.Tensor, colors: torch.Tensor, iterations: int = 3) -> torch.Tensor:
    """Least squares SH (9, 3) so that colors (N,3) ~ sh_basis(normals (N,3)) @ L, with Huber IRLS."""
    a = _sh_design(normals.double())
    y = colors.double()
    w = torch.ones(y.shape[0], dtype=torch.float64)
    eye = torch.eye(9, dtype=torch.float64)
    sol = torch.zeros(9, 3, dtype=torch.float64)
    for _ in range(iterations):
        aw = a * w[:, None]
        ata = aw.T @ a
        sol = torch.linalg.solve(ata + 1e-7 * ata.trace() / 9 * eye, aw.T @ y)
        r = (a @ sol - y).norm(dim=1)
        delta = 1.5 * r.median().clamp_min(1e-4)
        w = torch.where(r <= delta, torch.ones_like(r), delta / r)
    return sol


def split_albedo_light(light_raw: torch.Tensor, normals: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """L_raw (9,3) fitted with albedo 1 -> (albedo colour (3,), white light (9,3)).

    The scale between albedo and light is not observable in one image; the convention: the light is
    white and its shading averages 1 over the fitted skin ``normals`` (N,3), so the skin's mean
    colour goes into the albedo."""
    mean_shade = (_sh_design(normals.to(light_raw.dtype)) @ light_raw).mean(0)   # (3,)
    albedo = mean_shade.clamp(0.02, 1.0)
    return albedo, light_raw / albedo[None]


def _vertex_adjacency(faces: torch.Tensor, n: int):
    """Row-normalised vertex adjacency (scipy CSR)."""
    import scipy.sparse as sp

    f = faces.cpu().numpy()
    i = np.concatenate([f[:, 0], f[:, 1], f[:, 2], f[:, 1], f[:, 2], f[:, 0]])
    j = np.concatenate([f[:, 1], f[:, 2], f[:, 0], f[:, 0], f[:, 1], f[:, 2]])
    a = sp.csr_matrix((np.ones(i.shape[0]), (i, j)), shape=(n, n))
    a.data[:] = 1.0
    deg = np.asarray(a.sum(1)).ravel().clip(1)
    return sp.diags(1.0 / deg) @ a


def diffuse_fill(values: torch.Tensor, known: torch.Tensor, faces: torch.Tensor, iterations: int = 60) -> torch.Tensor:
    """Fill unknown per-vertex values (V,C) by repeated neighbour averaging from the known ones."""
    n = values.shape[0]
    k = known.cpu().numpy().astype(bool)
    if not k.any():
        return values
    adj = _vertex_adjacency(faces, n)
    v0 = values.detach().cpu().double().numpy()
    x = v0.copy()
    x[~k] = v0[k].mean(0)
    for _ in range(iterations):
        x[~k] = (adj @ x)[~k]
    return torch.tensor(x, dtype=values.dtype, device=values.device)


def _sample(image: torch.Tensor, px: torch.Tensor) -> torch.Tensor:
    """Bilinear colours (N,3) of image (3,H,W) at pixel coordinates px (N,2) (pixel centres at +0.5)."""
    h, w = image.shape[-2:]
    grid = torch.stack([px[:, 0] / w * 2 - 1, px[:, 1] / h * 2 - 1], -1).to(image.dtype)
    out = torch.nn.functional.grid_sample(image[None], grid[None, None], align_corners=False, mode="bilinear",
                                          padding_mode="border")
    return out[0, :, 0].T


def fit_photometric(model: FaceModel, params: FaceParams, images: Sequence[np.ndarray] | np.ndarray, texture_size: int = 0,
                    share_albedo: bool = False) -> tuple[FaceParams, dict[str, Any]]:
    """Fit light and albedo for every face of ``params`` against its image (frame, uint8 RGB)."""
    from facerig.detect.crops import warp_to_crop
    from facerig.render.buffers import render_buffers, screen_vertices
    from facerig.render.raster import interpolate, vertex_normals
    from facerig.render.shading import shading as sh_shading

    b = params.batch_size
    reports: list[dict[str, Any]]
    lights, albedos, textures, tmasks, reports = [], [], [], [], []
    with torch.no_grad():
        verts_all = model(params.identity, params.expression, params.jaw_pose)
        world_all = pose_vertices(verts_all, params.rotation)
        for i in range(b):
            p = params[i]
            assert p.crop is not None  # fitted params carry their crops
            crop = p.crop[0]
            img = torch.tensor(warp_to_crop(images[i], crop), dtype=torch.float32).permute(2, 0, 1) / 255.0
            frags: list = []
            buf = render_buffers(model, p, size=crop.size, vertices=verts_all[i : i + 1], fragments_out=frags)
            frag = frags[0]
            skin = _skin_mask(buf)[0]
            if int(skin.sum()) < 50:
                log.warning("face %d: too few visible skin pixels (%d) for a photometric fit", i, int(skin.sum()))
                lights.append(p.light[0])
                albedos.append(model.default_albedo.to(p.light.dtype))
                reports.append({"skin_pixels": int(skin.sum())})
                continue
            n = buf.normal[0].permute(1, 2, 0)[skin]           # unit normals (N,3)
            col = img.permute(1, 2, 0)[skin]
            raw = fit_light(n, col)
            skin_albedo, light = split_albedo_light(raw, n)
            lights.append(light.float())
            # per-vertex albedo
            world = world_all[i : i + 1]
            scr = screen_vertices(world, p, crop.size, "crop")[0][0]         # (V,3) pixels + depth
            px = scr[:, :2]
            vn = vertex_normals(world, model.faces)[0]
            shade_v = sh_shading(vn[None], light[None].to(vn.dtype))[0]     # (V,3)
            zb = frag.zbuf[0]
            inside = (px[:, 0] >= 0) & (px[:, 1] >= 0) & (px[:, 0] < crop.size) & (px[:, 1] < crop.size)
            vis = inside & (vn[:, 2] > 0.15)
            if zb is not None:
                pi = px.long().clamp(0, crop.size - 1)
                zpix = zb[pi[:, 1], pi[:, 0]]
                depth_tol = 0.02 * float(scr[:, 2].max() - scr[:, 2].min())
                vis = vis & (scr[:, 2] >= zpix - depth_tol)
            colors_v = _sample(img, px.float())
            alb = (colors_v / shade_v.clamp_min(0.05)).clamp(0, 1)
            fallback = model.default_albedo.to(alb.dtype) * (skin_albedo.to(alb.dtype) /
                                                              model.default_albedo.mean(0).clamp_min(1e-3))
            alb = torch.where(vis[:, None], alb, fallback.clamp(0, 1))
            alb = diffuse_fill(alb, vis, model.faces)
            albedos.append(alb.float())
            # reports: how well does the lighting explain the skin's shading?
            sh_img = sh_shading(n[None], light[None].to(n.dtype))[0]
            pred_const = sh_img * skin_albedo.to(sh_img.dtype)[None]
            lum = col.mean(1)
            lum_pred = pred_const.mean(1)
            ss_res = float(((lum - lum_pred) ** 2).sum())
            ss_tot = float(((lum - lum.mean()) ** 2).sum())
            alb_img = interpolate(alb[None].to(buf.normal.dtype), model.faces, frag)
            rend_img = alb_img * sh_shading(buf.normal, light[None].to(buf.normal.dtype))
            rend = rend_img[0].permute(1, 2, 0)[skin]
            reports.append({
                "skin_pixels": int(skin.sum()),
                "mae_const_albedo_255": float((pred_const - col).abs().mean() * 255),
                "mae_vertex_albedo_255": float((rend - col).abs().mean() * 255),
                "shading_r2": 1 - ss_res / max(ss_tot, 1e-12),
                "skin_albedo": [float(x) for x in skin_albedo],
                "visible_vertices": int(vis.sum()),
            })
            if texture_size > 0:
                tex, tmask = unwrap_texture(model, world, scr, px, img, light.float(), texture_size, zb)
                textures.append(tex)
                tmasks.append(tmask)
    light_t = torch.stack(lights).to(params.light.dtype)
    albedo_t = torch.stack(albedos)
    if share_albedo and b > 1:
        albedo_t = albedo_t.mean(0, keepdim=True).expand(b, -1, -1).clone()
    out = params.replace(light=light_t, albedo=albedo_t)
    if textures:
        out = out.replace(texture=torch.stack(textures), texture_mask=torch.stack(tmasks))
    valid = [r for r in reports if "shading_r2" in r]
    summary = {
        "mae_const_albedo_255": float(np.median([r["mae_const_albedo_255"] for r in valid])) if valid else math.nan,
        "mae_vertex_albedo_255": float(np.median([r["mae_vertex_albedo_255"] for r in valid])) if valid else math.nan,
        "shading_r2": float(np.median([r["shading_r2"] for r in valid])) if valid else math.nan,
    }
    return out, {"summary": summary, "per_image": reports}


def unwrap_texture(model: FaceModel, world: torch.Tensor, scr: torch.Tensor, px: torch.Tensor, img: torch.Tensor,
                   light: torch.Tensor, size: int, zbuf: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """UV albedo texture (3,T,T) and validity mask (1,T,T): texels seen in the image, divided by shading."""
    from facerig.render.raster import interpolate, rasterize, vertex_normals
    from facerig.render.shading import shading as sh_shading

    uv = model.uv.to(px.dtype)
    uv_scr = torch.stack([uv[:, 0] * size, (1 - uv[:, 1]) * size, torch.zeros_like(uv[:, 0])], -1)
    frag = rasterize(uv_scr[None], model.faces, size, size)
    vn = vertex_normals(world, model.faces)[0]
    attrs = torch.cat([px, scr[:, 2:3], vn], -1)                       # (V, 6)
    it = interpolate(attrs[None], model.faces, frag)[0]                  # (6,T,T)
    covered = frag.face_index[0] >= 0
    tpx = it[:2].permute(1, 2, 0)[covered]
    tz = it[2][covered]
    tn = torch.nn.functional.normalize(it[3:6].permute(1, 2, 0)[covered], dim=-1)
    colors = _sample(img, tpx.float())
    shade = sh_shading(tn[None], light[None].to(tn.dtype))[0]
    val = (colors / shade.clamp_min(0.05)).clamp(0, 1)
    ok = (tn[:, 2] > 0.1) & (tpx[:, 0] >= 0) & (tpx[:, 1] >= 0) & (tpx[:, 0] < img.shape[-1]) & (tpx[:, 1] < img.shape[-2])
    if zbuf is not None:
        pi = tpx.long().clamp(0, img.shape[-1] - 1)
        zs = zbuf[pi[:, 1], pi[:, 0]]
        ok = ok & (tz >= zs - 0.02 * float(scr[:, 2].max() - scr[:, 2].min()))
    for name in ("mouth_interior",):
        if name in model.region_names:
            fr = model.face_region[frag.face_index[0][covered].clamp_min(0)]
            ok = ok & (fr != model.region_names.index(name))
    tex = torch.zeros(3, size, size)
    mask = torch.zeros(1, size, size)
    ys, xs = torch.nonzero(covered, as_tuple=True)
    tex[:, ys, xs] = (val * ok[:, None]).T.float()
    mask[0, ys, xs] = ok.float()
    return tex, mask
