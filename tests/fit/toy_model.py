"""A small synthetic face model (a bumpy half-ellipsoid) for solver tests that need no assets."""

from __future__ import annotations

import numpy as np
import torch

from facerig.morphable.base import FaceModel


class ToyFaceModel(FaceModel):
    name = "toy"
    units = "cm"
    region_names = ("skin",)

    def __init__(self, n_id: int = 10, n_exp: int = 8, grid: int = 16, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        u, v = np.meshgrid(np.linspace(-1, 1, grid), np.linspace(-1, 1, grid))
        x, y = 7 * u, 9 * v
        z = 5 * np.sqrt(np.clip(1 - 0.7 * u**2 - 0.5 * v**2, 0.05, None)) + 1.5 * np.exp(-(u**2 + v**2) * 8)
        verts = np.stack([x, y, z], -1).reshape(-1, 3)
        faces = []
        for i in range(grid - 1):
            for j in range(grid - 1):
                a, b, c, d = i * grid + j, i * grid + j + 1, (i + 1) * grid + j, (i + 1) * grid + j + 1
                faces += [[a, b, d], [a, d, c]]
        faces = np.asarray(faces)
        # make them counter-clockwise seen from +z (y up): a=(x0,y0), b=(x1,y0), d=(x1,y1)
        nv = verts.shape[0]
        self.register_buffer("mean", torch.tensor(verts, dtype=torch.float32))
        self.register_buffer("faces", torch.tensor(faces, dtype=torch.long))
        smooth = torch.tensor(np.stack([np.sin((k + 1) * u.ravel()) * np.cos((k % 3 + 1) * v.ravel())
                                        for k in range(max(n_id, n_exp))], 0), dtype=torch.float32)
        idb = torch.randn(n_id, 1, 3, generator=g) * smooth[:n_id, :, None] * 0.6
        exb = torch.randn(n_exp, 1, 3, generator=g) * smooth[:n_exp, :, None].roll(1, 0) * 0.8
        self.register_buffer("identity_basis", idb)
        self.register_buffer("expression_basis", exb)
        self.expression_names = tuple(f"e{k}" for k in range(n_exp))
        self.register_buffer("uv", torch.tensor(np.stack([(u.ravel() + 1) / 2, (v.ravel() + 1) / 2], -1), dtype=torch.float32))
        # every vertex is a landmark: pick a triangle that has it and one-hot barycentrics
        vf = np.full(nv, -1)
        bary = np.zeros((nv, 3))
        for fi, f in enumerate(faces):
            for k, vid in enumerate(f):
                if vf[vid] < 0:
                    vf[vid] = fi
                    bary[vid, k] = 1
        self.register_buffer("landmark_index", torch.arange(nv))
        self.register_buffer("landmark_faces", torch.tensor(vf, dtype=torch.long))
        self.register_buffer("landmark_bary", torch.tensor(bary, dtype=torch.float32))
        self.register_buffer("landmark_weight", torch.ones(nv))
        self.register_buffer("face_region", torch.zeros(len(faces), dtype=torch.long))
        self.register_buffer("default_albedo", torch.full((nv, 3), 0.6))
