"""The face-model protocol shared by the builtin, ict and flame tiers.

A face model is a thin ``nn.Module`` holding buffers; the math lives in pure functions
(``facerig.morphable.lbs``). Every tier maps the 478 MediaPipe landmarks to points on its surface
(``landmark_index`` + ``landmark_faces``/``landmark_bary``) so one fitter serves all tiers.
"""

from __future__ import annotations

import hashlib

import torch
from torch import nn

from facerig.errors import IncompatibleModel, InvalidInput


class FaceModel(nn.Module):
    """Base class. Subclasses fill the buffers in ``__init__`` and may override ``forward``.

    Buffers (float32 unless noted):

    * ``mean`` (V, 3): neutral mean shape in model units (``units``), x = subject's left, y up, z to viewer
    * ``faces`` (F, 3) long: triangles, counter-clockwise seen from outside
    * ``identity_basis`` (K_id, V, 3), ``expression_basis`` (K_exp, V, 3): linear offsets
    * ``uv`` (V, 2) in [0, 1]: per-vertex texture coordinates (v up, OpenGL style)
    * ``landmark_index`` (L,) long: MediaPipe landmark ids (0..477) that the model can explain
    * ``landmark_faces`` (L,) long, ``landmark_bary`` (L, 3): where each of those lies on the surface
    * ``landmark_weight`` (L,): relative weight of each landmark in fitting (e.g. lower on the contour)
    * ``face_region`` (F,) long: region id of every triangle, names in ``region_names``
      (at least: skin, brows, eyes, lips, mouth_interior where the topology has them)
    * ``default_albedo`` (V, 3) in [0, 1]: albedo used when FaceParams has none
    """

    name: str = "base"
    units: str = "cm"
    expression_names: tuple[str, ...] = ()
    #: range of expression coefficients: (0, 1) for blendshapes, None for unbounded PCA
    expression_range: tuple[float, float] | None = (0.0, 1.0)
    #: aliases for expression names: alias -> names it sets together (e.g. mouthPress -> _L, _R)
    expression_aliases: dict[str, tuple[str, ...]] = {}
    region_names: tuple[str, ...] = ()

    mean: torch.Tensor
    faces: torch.Tensor
    identity_basis: torch.Tensor
    expression_basis: torch.Tensor
    uv: torch.Tensor
    landmark_index: torch.Tensor
    landmark_faces: torch.Tensor
    landmark_bary: torch.Tensor
    landmark_weight: torch.Tensor
    face_region: torch.Tensor
    default_albedo: torch.Tensor

    # ---- sizes ----------------------------------------------------------------------------
    @property
    def n_vertices(self) -> int:
        return int(self.mean.shape[0])

    @property
    def n_identity(self) -> int:
        return int(self.identity_basis.shape[0])

    @property
    def n_expression(self) -> int:
        return int(self.expression_basis.shape[0])

    @property
    def has_jaw_joint(self) -> bool:
        """True when the jaw is a skinned joint (flame) rather than blendshapes."""
        return False

    def fingerprint(self) -> str:
        """Stable short id of the topology + bases: engines refuse buffers of another model."""
        h = hashlib.sha1()
        h.update(self.name.encode())
        h.update(str(tuple(self.faces.shape)).encode())
        h.update(self.faces[:: max(1, self.faces.shape[0] // 64)].cpu().numpy().tobytes())
        h.update(str((self.n_vertices, self.n_identity, self.n_expression)).encode())
        return f"{self.name}-{h.hexdigest()[:10]}"

    def check_params(self, model_id: str) -> None:
        if model_id not in (self.name, self.fingerprint()) and model_id.split("-")[0] != self.name:
            raise IncompatibleModel(f"parameters were fitted with face model {model_id!r}, not {self.name!r}")

    # ---- geometry -------------------------------------------------------------------------
    def forward(
        self,
        identity: torch.Tensor | None = None,
        expression: torch.Tensor | None = None,
        jaw_pose: torch.Tensor | None = None,
        batch_size: int | None = None,
    ) -> torch.Tensor:
        """Vertices (B, V, 3) in the head frame (before the global rotation and camera)."""
        b = _batch(identity, expression, jaw_pose, batch_size)
        v = self.mean.unsqueeze(0).expand(b, -1, -1)
        if identity is not None:
            v = v + torch.einsum("bk,kvc->bvc", identity.to(v.dtype), self.identity_basis[: identity.shape[1]])
        if expression is not None:
            v = v + torch.einsum(
                "bk,kvc->bvc", expression.to(v.dtype), self.expression_basis[: expression.shape[1]]
            )
        return v

    def landmarks(self, vertices: torch.Tensor) -> torch.Tensor:
        """Landmark positions (B, L, 3) on the surface, ordered as ``landmark_index``."""
        tri = self.faces[self.landmark_faces]  # (L, 3)
        corners = vertices[:, tri]  # (B, L, 3, 3)
        return (corners * self.landmark_bary[None, :, :, None].to(vertices.dtype)).sum(2)

    def landmarks_of_basis(self, which: str) -> torch.Tensor:
        """The basis sampled at the landmarks: (K, L, 3) for ``which`` = identity | expression."""
        basis = self.identity_basis if which == "identity" else self.expression_basis
        cache = self.__dict__.setdefault("_lm_basis_cache", {})
        key = (which, basis.device, basis.dtype, basis.data_ptr())
        if key not in cache:
            tri = self.faces[self.landmark_faces]
            cache.clear() if len(cache) > 8 else None
            cache[key] = (basis[:, tri] * self.landmark_bary[None, :, :, None].to(basis.dtype)).sum(2)
        return cache[key]

    # ---- expressions by name ---------------------------------------------------------------
    def expression_vector(self, values: dict[str, float], batch_size: int = 1) -> torch.Tensor:
        """Expression coefficients (B, K_exp) from a name -> value dict (aliases allowed)."""
        out = torch.zeros(batch_size, self.n_expression)
        for key, val in values.items():
            for name in self.resolve_expression_name(key):
                out[:, self.expression_names.index(name)] = float(val)
        return out

    def resolve_expression_name(self, key: str) -> tuple[str, ...]:
        if key in self.expression_names:
            return (key,)
        if key in self.expression_aliases:
            return self.expression_aliases[key]
        lower = {n.lower(): n for n in self.expression_names}
        if key.lower() in lower:
            return (lower[key.lower()],)
        raise InvalidInput(
            "expression name",
            f"one of the {self.name} model's names (e.g. {', '.join(self.expression_names[:6])}, ...)",
            key,
        )


def _batch(*tensors: torch.Tensor | None | int) -> int:
    for t in tensors:
        if isinstance(t, torch.Tensor):
            return int(t.shape[0])
        if isinstance(t, int):
            return t
    return 1
