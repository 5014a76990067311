"""Small procedural meshes and a toy FaceModel, for tests and benchmarks of the renderer."""

from __future__ import annotations

import math

import torch

from facerig.morphable.base import FaceModel


def uv_sphere(
    n_lat: int = 20, n_lon: int = 26, radius: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Latitude/longitude sphere: vertices (V, 3), faces (F, 3) counter-clockwise seen from outside,
    and per-vertex uv (V, 2) in [0, 1] (u = longitude from the back, v up; the seam triangles
    at the back interpolate u across it). V = (n_lat - 1) * n_lon + 2,
    F = 2 * n_lon * (n_lat - 1). The defaults give 496 vertices / 988 triangles."""
    verts = [(0.0, radius, 0.0)]
    uv = [(0.5, 1.0)]
    for i in range(1, n_lat):
        theta = math.pi * i / n_lat  # from +y down
        for j in range(n_lon):
            phi = 2 * math.pi * j / n_lon - math.pi  # the u seam is at the back (-z)
            verts.append(
                (
                    radius * math.sin(theta) * math.sin(phi),
                    radius * math.cos(theta),
                    radius * math.sin(theta) * math.cos(phi),
                )
            )
            uv.append((j / n_lon, 1 - i / n_lat))
    verts.append((0.0, -radius, 0.0))
    uv.append((0.5, 0.0))
    bottom = len(verts) - 1

    def ring(i: int, j: int) -> int:
        return 1 + (i - 1) * n_lon + (j % n_lon)

    faces = []
    for j in range(n_lon):
        faces.append((0, ring(1, j), ring(1, j + 1)))
    for i in range(1, n_lat - 1):
        for j in range(n_lon):
            a, b, c, d = ring(i, j), ring(i + 1, j), ring(i + 1, j + 1), ring(i, j + 1)
            faces += [(a, b, c), (a, c, d)]
    for j in range(n_lon):
        faces.append((bottom, ring(n_lat - 1, j + 1), ring(n_lat - 1, j)))
    v = torch.tensor(verts, dtype=torch.float32)
    f = torch.tensor(faces, dtype=torch.long)
    # orient every triangle outwards (the formulas above already do; this guards the convention)
    va, vb, vc = v[f[:, 0]], v[f[:, 1]], v[f[:, 2]]
    inward = (torch.cross(vb - va, vc - va, dim=-1) * (va + vb + vc)).sum(-1) < 0
    f[inward] = f[inward][:, [0, 2, 1]]
    return v, f, torch.tensor(uv, dtype=torch.float32)


def cube() -> tuple[torch.Tensor, torch.Tensor]:
    """Unit cube [-1, 1]^3: 8 vertices, 12 triangles counter-clockwise seen from outside."""
    v = torch.tensor([[x, y, z] for x in (-1.0, 1.0) for y in (-1.0, 1.0) for z in (-1.0, 1.0)])
    quads = [(0, 1, 3, 2), (4, 6, 7, 5), (0, 4, 5, 1), (2, 3, 7, 6), (0, 2, 6, 4), (1, 5, 7, 3)]
    faces = []
    for a, b, c, d in quads:
        faces += [(a, b, c), (a, c, d)]
    f = torch.tensor(faces, dtype=torch.long)
    p0, p1, p2 = v[f[:, 0]], v[f[:, 1]], v[f[:, 2]]
    inward = (torch.cross(p1 - p0, p2 - p0, dim=-1) * (p0 + p1 + p2)).sum(-1) < 0
    f[inward] = f[inward][:, [0, 2, 1]]
    return v, f


class SphereFaceModel(FaceModel):
    """A toy face model: a sphere of radius ``radius`` with 2 identity and 3 expression directions
    and three regions by height (``lips`` below y < -0.3 r, ``brows`` above y > 0.4 r, ``skin``)."""

    name = "toy_sphere"
    units = "cm"
    expression_names = ("inflate", "stretch_x", "shift_z")
    region_names = ("skin", "brows", "lips")

    def __init__(self, n_lat: int = 20, n_lon: int = 26, radius: float = 1.0) -> None:
        super().__init__()
        v, f, uv = uv_sphere(n_lat, n_lon, radius)
        n = v / radius
        self.register_buffer("mean", v)
        self.register_buffer("faces", f)
        self.register_buffer("uv", uv)
        ident = torch.stack([0.1 * v, 0.1 * v * torch.tensor([1.0, 0.0, 0.0])])
        expr = torch.stack(
            [0.1 * n, 0.2 * v * torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.0, 0.0, 0.1]).expand_as(v)]
        )
        self.register_buffer("identity_basis", ident)
        self.register_buffer("expression_basis", expr)
        cy = v[f].mean(1)[:, 1] / radius
        region = torch.zeros(f.shape[0], dtype=torch.long)
        region[cy > 0.4] = 1
        region[cy < -0.3] = 2
        self.register_buffer("face_region", region)
        self.register_buffer("default_albedo", (0.5 + 0.4 * n).clamp(0, 1))
        self.register_buffer("landmark_index", torch.zeros(0, dtype=torch.long))
        self.register_buffer("landmark_faces", torch.zeros(0, dtype=torch.long))
        self.register_buffer("landmark_bary", torch.zeros(0, 3))
        self.register_buffer("landmark_weight", torch.zeros(0))
