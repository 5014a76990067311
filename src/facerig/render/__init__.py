"""Rendering: cameras, a rasteriser (numba / torch / reference visibility + differentiable
barycentrics), DECA-convention SH shading and the physical buffers of a fitted face."""

from facerig.render.buffers import render_buffers, screen_vertices
from facerig.render.raster import (
    Fragments,
    PackedFragments,
    barycentrics,
    interpolate,
    numba_available,
    rasterize,
    rasterize_reference,
    scatter_pixels,
    vertex_normals,
    visibility,
)
from facerig.render.shading import (
    SH_CONSTANTS,
    directional_light_sh,
    fit_sh,
    lambertian,
    light_direction,
    sh_basis,
    shading,
)

__all__ = [
    "SH_CONSTANTS",
    "Fragments",
    "PackedFragments",
    "barycentrics",
    "directional_light_sh",
    "fit_sh",
    "interpolate",
    "lambertian",
    "light_direction",
    "numba_available",
    "rasterize",
    "rasterize_reference",
    "render_buffers",
    "scatter_pixels",
    "screen_vertices",
    "sh_basis",
    "shading",
    "vertex_normals",
    "visibility",
]
