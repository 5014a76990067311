"""Pictures for people: buffer PNG encodings, mesh overlays, side-by-side previews, contact sheets."""

from __future__ import annotations

import numpy as np
import torch

REGION_COLORS = np.array(
    [[230, 190, 160], [90, 60, 40], [250, 250, 250], [200, 60, 70], [60, 10, 20], [180, 140, 120],
     [120, 160, 220], [150, 220, 150], [220, 220, 120], [160, 120, 200]], dtype=np.uint8)


def _u8(x: np.ndarray) -> np.ndarray:
    return (np.clip(x, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def buffer_to_rgb(name: str, value: torch.Tensor, region_names: tuple[str, ...] = ()) -> np.ndarray:
    """One buffer of one image (C,H,W) -> uint8 (H,W,3), using the PNG encodings of conventions.md:
    normals (n+1)/2 (background black), albedo/shading/render clamped to [0,1], depth and mask as gray,
    uv as (u, v, 0), regions colour-coded."""
    a = value.detach().float().cpu().numpy()
    if name in ("normal", "normal_camera"):
        covered = np.abs(a).sum(0) > 0
        img = _u8((a.transpose(1, 2, 0) + 1) / 2)
        img[~covered] = 0
        return img
    if name in ("albedo", "shading", "render"):
        return _u8(a.transpose(1, 2, 0))
    if name in ("depth", "mask"):
        return np.repeat(_u8(a[0])[..., None], 3, -1)
    if name == "uv":
        return _u8(np.concatenate([a, np.zeros_like(a[:1])], 0).transpose(1, 2, 0))
    if name == "regions":
        lab = np.where(a.sum(0) > 0.5, a.argmax(0), -1)
        img = np.zeros(lab.shape + (3,), np.uint8)
        for k in range(a.shape[0]):
            img[lab == k] = REGION_COLORS[k % len(REGION_COLORS)]
        return img
    raise ValueError(f"unknown buffer {name!r}")


def draw_mesh(image: np.ndarray, points_px: np.ndarray, faces: np.ndarray, color=(0, 255, 120),
              thickness: int = 1, visible: np.ndarray | None = None, alpha: float = 0.6) -> np.ndarray:
    """Wireframe of a projected mesh (points (V,2) in the image's pixels) over the image."""
    import cv2

    over = image.copy()
    pts = np.round(points_px * 16).astype(np.int32)
    tri = faces if visible is None else faces[visible]
    polys = [pts[t].reshape(-1, 1, 2) for t in tri]
    cv2.polylines(over, polys, True, color, thickness, lineType=cv2.LINE_AA, shift=4)
    return (image * (1 - alpha) + over * alpha).astype(np.uint8)


def draw_points(image: np.ndarray, points_px: np.ndarray, color=(255, 60, 60), radius: int = 1) -> np.ndarray:
    import cv2

    out = image.copy()
    for x, y in np.round(points_px[:, :2]).astype(int):
        cv2.circle(out, (int(x), int(y)), radius, color, -1, lineType=cv2.LINE_AA)
    return out


def label(image: np.ndarray, text: str) -> np.ndarray:
    import cv2

    out = image.copy()
    h = max(14, image.shape[0] // 24)
    cv2.rectangle(out, (0, 0), (min(out.shape[1], int(len(text) * h * 0.55) + 8), h + 6), (0, 0, 0), -1)
    cv2.putText(out, text, (4, h), cv2.FONT_HERSHEY_SIMPLEX, h / 30, (255, 255, 255), 1, cv2.LINE_AA)
    return out


def fit_to(image: np.ndarray, height: int) -> np.ndarray:
    import cv2

    if image.shape[0] == height:
        return image
    w = max(1, int(round(image.shape[1] * height / image.shape[0])))
    interp = cv2.INTER_AREA if image.shape[0] > height else cv2.INTER_LINEAR
    return cv2.resize(image, (w, height), interpolation=interp)


def hstack(images: list[np.ndarray], height: int = 256, gap: int = 4) -> np.ndarray:
    tiles = [fit_to(im, height) for im in images]
    sep = np.full((height, gap, 3), 255, np.uint8)
    out = []
    for i, t in enumerate(tiles):
        if i:
            out.append(sep)
        out.append(t)
    return np.concatenate(out, 1)


def grid(images: list[np.ndarray], cols: int, height: int = 192, gap: int = 4) -> np.ndarray:
    rows = [hstack(images[i : i + cols], height, gap) for i in range(0, len(images), cols)]
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows]
    sep = np.full((gap, width, 3), 255, np.uint8)
    out = []
    for i, r in enumerate(rows):
        if i:
            out.append(sep)
        out.append(r)
    return np.concatenate(out, 0)
