"""The builtin face model: MediaPipe face-mesh topology (478 vertices), always available.

Made by ``scripts/build_builtin_model.py`` from MediaPipe's own output and ICT-FaceKit's
(MIT) identity/expression shapes; see ``facerig/assets/BUILTIN_MODEL_CARD.md`` and
``docs/builtin-model.md``. Every vertex is a MediaPipe landmark, so ``landmark_index`` is 0..477.
"""

from __future__ import annotations

import json
from functools import lru_cache

import numpy as np
import torch

from facerig.errors import AssetMissing
from facerig.io.assets import package_asset
from facerig.morphable.base import FaceModel

ASSET_NAME = "builtin_face_model.npz"


@lru_cache(maxsize=1)
def load_arrays() -> dict:
    """The packaged npz parsed into numpy arrays (cached; treat as read-only)."""
    path = package_asset(ASSET_NAME)
    try:
        with np.load(path, allow_pickle=False) as d:
            out = {k: d[k] for k in d.files}
    except Exception as e:  # a truncated/corrupt install
        raise AssetMissing(
            f"builtin face model ({path})", str(path.parent), f"reinstall facerig ({e})"
        ) from e
    out["expression_aliases"] = {
        k: tuple(v) for k, v in json.loads(str(out.pop("expression_aliases_json"))).items()
    }
    out["build_report"] = json.loads(str(out.pop("build_report_json")))
    return out


class BuiltinFaceModel(FaceModel):
    """MediaPipe-topology face model in centimetres (x = subject's left, y up, z to the viewer).

    Identity coefficients are in standard deviations (ICT's modes are stored pre-scaled by their
    standard deviation); expression coefficients are ARKit-style blendshape weights in [0, 1].
    """

    name = "builtin"
    units = "cm"
    expression_range = (0.0, 1.0)

    def __init__(self, arrays: dict, dtype: torch.dtype = torch.float32, device=None):
        super().__init__()
        a = arrays
        self.expression_names = tuple(str(n) for n in a["expression_names"])
        self.expression_aliases = dict(a["expression_aliases"])
        self.region_names = tuple(str(n) for n in a["region_names"])
        self.build_report = a.get("build_report", {})

        def f(x):
            return torch.as_tensor(np.asarray(x, dtype=np.float32), dtype=dtype, device=device)

        def i(x):
            return torch.as_tensor(np.asarray(x, dtype=np.int64), device=device)

        self.register_buffer("mean", f(a["mean"]))
        self.register_buffer("faces", i(a["faces"]))
        self.register_buffer("identity_basis", f(a["identity_basis"]))
        self.register_buffer("expression_basis", f(a["expression_basis"]))
        self.register_buffer("uv", f(a["uv"]))
        self.register_buffer("landmark_index", i(a["landmark_index"]))
        self.register_buffer("landmark_faces", i(a["landmark_faces"]))
        self.register_buffer("landmark_bary", f(a["landmark_bary"]))
        self.register_buffer("landmark_weight", f(a["landmark_weight"]))
        self.register_buffer("face_region", i(a["face_region"]))
        self.register_buffer("default_albedo", f(a["default_albedo"]))
        #: index of each vertex's left/right mirror partner
        self.register_buffer("mirror_index", i(a["mirror"]))

    @classmethod
    def load(cls, dtype: torch.dtype = torch.float32, device=None) -> BuiltinFaceModel:
        return cls(load_arrays(), dtype=dtype, device=device)


__all__ = ["BuiltinFaceModel", "load_arrays"]
