"""Cameras: world-space vertices -> crop NDC and pixels (pure functions).

World frame: x right (subject's left), y up, z towards the viewer. Two cameras (FaceParams.camera_kind):

* ``weak_perspective`` (DECA): ``ndc_x = s * (x + tx)``, ``ndc_y = -s * (y + ty)``; the third
  output coordinate is ``s * z`` (larger = nearer the viewer).
* ``perspective``: camera at the origin looking down -z; ``p = v + (tx, ty, tz)`` (tz < 0 puts the
  head in front), ``ndc_x = focal * p_x / -p_z``, ``ndc_y = -focal * p_y / -p_z``; the third
  coordinate is ``p_z`` (larger = nearer).

NDC: x, y in [-1, 1] over the crop with y down; ``pixels = (ndc + 1) / 2 * size``.
"""

from __future__ import annotations

import torch

from facerig.rotations import axis_angle_to_matrix


def pose_vertices(vertices: torch.Tensor, rotation: torch.Tensor) -> torch.Tensor:
    """Apply the head rotation (B,3 axis-angle) to head-frame vertices (B,V,3) -> world (B,V,3)."""
    r = axis_angle_to_matrix(rotation.to(vertices.dtype))
    return vertices @ r.transpose(-1, -2)


def project(world: torch.Tensor, camera: torch.Tensor, kind: str = "weak_perspective",
            focal: float = 12.0) -> torch.Tensor:
    """World vertices (B,V,3) -> (B,V,3): NDC x, NDC y (down), and a depth where larger = nearer."""
    cam = camera.to(world.dtype)
    if kind == "weak_perspective":
        s = cam[:, None, 0:1]
        xy = s * (world[..., :2] + cam[:, None, 1:3])
        return torch.stack([xy[..., 0], -xy[..., 1], s[..., 0] * world[..., 2]], -1)
    if kind == "perspective":
        p = world + cam[:, None, :]
        d = (-p[..., 2]).clamp_min(1e-6)
        return torch.stack([focal * p[..., 0] / d, -focal * p[..., 1] / d, p[..., 2]], -1)
    raise ValueError(f"camera kind: expected weak_perspective or perspective, got {kind!r}")


def ndc_to_pixels(ndc_xy: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """(..., 2) NDC (y down) -> continuous pixel coordinates for an image of ``size`` (H, W) or side."""
    h, w = (size, size) if isinstance(size, int) else size
    scale = torch.tensor([w / 2.0, h / 2.0], dtype=ndc_xy.dtype, device=ndc_xy.device)
    return (ndc_xy + 1.0) * scale


def pixels_to_ndc(px: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    h, w = (size, size) if isinstance(size, int) else size
    scale = torch.tensor([w / 2.0, h / 2.0], dtype=px.dtype, device=px.device)
    return px / scale - 1.0


def view_directions(world: torch.Tensor, camera: torch.Tensor, kind: str = "weak_perspective") -> torch.Tensor:
    """Unit vectors from each point towards the camera (B,V,3), world frame."""
    if kind == "weak_perspective":
        d = torch.zeros_like(world)
        d[..., 2] = 1.0
        return d
    p = world + camera.to(world.dtype)[:, None, :]
    return torch.nn.functional.normalize(-p, dim=-1)


def world_to_opencv_camera(vec: torch.Tensor) -> torch.Tensor:
    """Direction vectors (...,3) from the world frame (y up, z to viewer) to OpenCV camera axes
    (x right, y down, z away from the viewer). The camera does not rotate, so this is a fixed flip."""
    return vec * torch.tensor([1.0, -1.0, -1.0], dtype=vec.dtype, device=vec.device)
