"""Reading the shards written by :mod:`facerig.train.prepare`, and same-identity pair sampling.

* :func:`render_aligned` renders a face's buffers pixel-aligned with an aligned crop (the FFHQ crop
  of a shard, or the FFHQ crop of an edited photo) at any resolution, as ``space="crop"``
  :class:`~facerig.types.RenderBuffers` (what :func:`~facerig.engines.diffusionrig.model_buffers`
  wants). The params' own crop (``params.crop``, a DECA crop) is composed with the aligned crop and
  the face is rendered in "frame" space of the aligned image; the normal buffers are turned by the
  in-plane rotation of the aligned crop, so normals are expressed in the aligned image's axes
  (as when the face is fitted on the aligned crop itself).
* :class:`ShardDataset` -- map-style dataset over ``shard-*.tar`` (members indexed once, read by
  offset): ``image`` (3, S, S) float in [-1, 1], ``buffers`` (render, normal, albedo (3, S, S),
  mask (1, S, S)) from ``KEY.buffers.npz`` when stored at ``size``, else rendered from the params
  on the fly, ``cond`` (9, S, S) = [render, normal, albedo] (DiffusionRig's order), plus ``key``,
  ``identity``, ``frame`` (-1 for photos) and ``index``.
* :class:`PairSampler` -- (source, target) index pairs of one identity; frames of a video at least
  ``min_frame_gap`` apart.
"""

from __future__ import annotations

import io
import json
import os
import random
import tarfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from facerig.errors import InvalidInput
from facerig.types import CropTransform, FaceParams, RenderBuffers

__all__ = ["PairSampler", "ShardDataset", "aligned_crop_of", "render_aligned", "shard_files"]

BUFFER_CHANNELS = ("render", "normal", "albedo")


def aligned_crop_of(params: FaceParams, size: int) -> CropTransform:
    """The identity "crop" of the aligned image the params were fitted on, scaled to ``size``
    (shard params: ``params.crop[0].frame_size`` is the aligned crop's side)."""
    assert params.crop is not None  # shard params carry the aligned crop
    h, w = params.crop[0].frame_size
    if h != w:
        raise InvalidInput("params.crop", "params fitted on a square aligned crop", (h, w))
    k = size / float(h)
    return CropTransform(np.array([[k, 0.0, 0.0], [0.0, k, 0.0]]), size, (h, w), "aligned")


def render_aligned(model: Any, params: FaceParams, size: int, aligned: CropTransform | Sequence[CropTransform] | None = None,
                   **kw: Any) -> RenderBuffers:
    """Buffers of ``params`` (fitted in the frame their ``crop`` was made for) rendered into the
    aligned crop ``aligned`` (frame -> aligned pixels; default: the params' frame IS the aligned
    image, see :func:`aligned_crop_of`), ``size`` x ``size``, returned as crop-space buffers."""
    from facerig.render.buffers import render_buffers

    if params.crop is None:
        raise InvalidInput("params.crop", "the crop transforms of the fit", None)
    b = params.batch_size
    if aligned is None:
        al = [aligned_crop_of(params[i], size) for i in range(b)]
    elif isinstance(aligned, CropTransform):
        al = [aligned] * b
    else:
        al = list(aligned)
    composed, rots = [], []
    for d, a in zip(params.crop, al, strict=True):
        if a.size != size:
            a = CropTransform(a.matrix * (size / a.size), size, a.frame_size, a.kind)
        # aligned px -> deca px: D o A^-1; its "frame" is the aligned image
        a_inv = a.inverse_matrix
        m = d.matrix[:, :2] @ a_inv[:, :2]
        t = d.matrix[:, :2] @ a_inv[:, 2] + d.matrix[:, 2]
        composed.append(CropTransform(np.concatenate([m, t[:, None]], 1), d.size, (size, size), d.kind))
        lin = np.linalg.inv(m)  # deca px -> aligned px (similarity)
        rots.append(lin / np.sqrt(abs(np.linalg.det(lin))))
    buf = render_buffers(model, params.replace(crop=composed), space="frame", **kw)
    r = torch.from_numpy(np.stack(rots)).to(buf.normal.dtype)  # (B, 2, 2), pixel axes (y down)

    def turn(n: torch.Tensor, y_up: bool) -> torch.Tensor:
        x, y = n[:, 0], (-n[:, 1] if y_up else n[:, 1])
        nx = r[:, 0, 0, None, None] * x + r[:, 0, 1, None, None] * y
        ny = r[:, 1, 0, None, None] * x + r[:, 1, 1, None, None] * y
        return torch.stack([nx, -ny if y_up else ny, n[:, 2]], 1)

    import dataclasses

    return dataclasses.replace(buf, normal=turn(buf.normal, True), normal_camera=turn(buf.normal_camera, False),
                               space="crop")


def shard_files(root: str | os.PathLike | Sequence[str | os.PathLike]) -> list[Path]:
    """``shard-*.tar`` of a folder (sorted), or the given tar files."""
    if isinstance(root, (str, os.PathLike)):
        p = Path(root)
        files = sorted(p.glob("shard-*.tar")) if p.is_dir() else [p]
    else:
        files = [Path(x) for x in root]
    files = [f for f in files if f.is_file()]
    if not files:
        raise InvalidInput("data", "a folder of shard-*.tar (facerig prepare) or tar files", str(root))
    return files


def _decode_png(data: bytes) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


class ShardDataset(Dataset):
    """Map-style dataset over prepared shards (see the module docstring).

    ``size``: output side (images area-resized, buffers rendered at it unless stored at it);
    default: the shards' side. ``face_model``: a FaceModel (or name) for on-the-fly buffers;
    loaded from the params' model name when needed. ``buffers``: ``"auto"`` (stored when available
    at ``size``, else rendered), ``"render"`` (always render), ``False`` (images and params only).
    ``identities``: keep only these identities.
    """

    def __init__(self, root: Any, size: int | None = None, face_model: Any = None, buffers: str | bool = "auto",
                 identities: Sequence[str] | None = None):
        self.files = shard_files(root)
        self.size = size
        self.buffers = buffers
        self._model = face_model
        self._handles: dict[tuple[int, int], Any] = {}
        items: dict[tuple[int, str], dict[str, tuple[int, int]]] = {}
        order: list[tuple[int, str]] = []
        for fi, f in enumerate(self.files):
            with tarfile.open(f, "r") as tar:
                for m in tar:
                    if not m.isfile():
                        continue
                    key, _, ext = m.name.partition(".")
                    k = (fi, key)
                    if k not in items:
                        items[k] = {}
                        order.append(k)
                    items[k][ext] = (m.offset_data, m.size)
        self.samples: list[dict[str, Any]] = []
        keep = set(identities) if identities is not None else None
        for fi, key in order:
            mem = items[(fi, key)]
            if "png" not in mem or "params.json" not in mem:
                continue
            meta = json.loads(self._read(fi, mem["params.json"])).get("meta", {})
            ident = str(meta.get("identity", key.split("__")[0]))
            if keep is not None and ident not in keep:
                continue
            frame = meta.get("frame")
            self.samples.append({"file": fi, "key": key, "members": mem, "identity": ident,
                                 "frame": -1 if frame is None else int(frame), "source": meta.get("source")})
        if not self.samples:
            raise InvalidInput("data", "shards with at least one sample", [str(f) for f in self.files])

    # ---- raw access ------------------------------------------------------------------------
    def _read(self, fi: int, loc: tuple[int, int]) -> bytes:
        h = self._handles.get((os.getpid(), fi))
        if h is None:
            h = open(self.files[fi], "rb")  # noqa: SIM115 - kept open per process
            self._handles[(os.getpid(), fi)] = h
        h.seek(loc[0])
        return h.read(loc[1])

    def __getstate__(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["_handles"] = {}
        return d

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def identities(self) -> list[str]:
        return sorted({s["identity"] for s in self.samples})

    def params(self, i: int) -> FaceParams:
        s = self.samples[i]
        return FaceParams.from_json_dict(json.loads(self._read(s["file"], s["members"]["params.json"])))

    def image(self, i: int) -> np.ndarray:
        """The stored aligned crop, uint8 (S0, S0, 3)."""
        s = self.samples[i]
        return _decode_png(self._read(s["file"], s["members"]["png"]))

    @property
    def face_model(self) -> Any:
        if self._model is None or isinstance(self._model, str):
            from facerig.morphable import load_face_model

            name = self._model if isinstance(self._model, str) else self.params(0).model
            self._model = load_face_model(name)
        return self._model

    def buffers_of(self, i: int, size: int) -> dict[str, torch.Tensor]:
        s = self.samples[i]
        if self.buffers != "render" and "buffers.npz" in s["members"]:
            z = np.load(io.BytesIO(self._read(s["file"], s["members"]["buffers.npz"])))
            if z["render"].shape[-1] == size:
                return {n: torch.from_numpy(z[n].astype(np.float32)) for n in (*BUFFER_CHANNELS, "mask")}
        with torch.no_grad():
            b = render_aligned(self.face_model, self.params(i), size)
        return {n: getattr(b, n)[0].float() for n in (*BUFFER_CHANNELS, "mask")}

    def __getitem__(self, i: int) -> dict[str, Any]:
        import cv2

        s = self.samples[i]
        img = self.image(i)
        size = self.size or img.shape[0]
        if img.shape[0] != size:
            interp = cv2.INTER_AREA if size < img.shape[0] else cv2.INTER_CUBIC
            img = cv2.resize(img, (size, size), interpolation=interp)
        x = torch.from_numpy(np.array(img)).permute(2, 0, 1).float() / 127.5 - 1.0
        out: dict[str, Any] = {"image": x, "key": s["key"], "identity": s["identity"], "frame": s["frame"], "index": i}
        if self.buffers:
            bufs = self.buffers_of(i, size)
            out["buffers"] = bufs
            out["cond"] = torch.cat([bufs[n] for n in BUFFER_CHANNELS], 0)
        return out


class PairSampler(Sampler[tuple[int, int]]):
    """(source, target) index pairs of one identity, for engines trained on pairs.

    Every sample with at least one valid partner is a source once per epoch (shuffled, seeded with
    ``seed + epoch``); its target is drawn among the samples of the same identity that are another
    photo (album identities, ``frame`` -1) or, for video frames, at least ``min_frame_gap`` frames
    away. ``samples`` is a :class:`ShardDataset` or a list of ``{"identity", "frame"}`` dicts."""

    def __init__(self, samples: Any, min_frame_gap: int = 30, seed: int = 0):
        rows = samples.samples if hasattr(samples, "samples") else list(samples)
        self.ident = [str(r["identity"]) for r in rows]
        self.frame = [int(r.get("frame", -1) if r.get("frame") is not None else -1) for r in rows]
        self.min_gap = int(min_frame_gap)
        self.seed = int(seed)
        self.epoch = 0
        by: dict[str, list[int]] = {}
        for i, idn in enumerate(self.ident):
            by.setdefault(idn, []).append(i)
        self.partners: list[list[int]] = []
        for i in range(len(rows)):
            cands = [j for j in by[self.ident[i]] if j != i and self.valid(i, j)]
            self.partners.append(cands)
        self.sources = [i for i, c in enumerate(self.partners) if c]

    def valid(self, i: int, j: int) -> bool:
        if self.ident[i] != self.ident[j] or i == j:
            return False
        fi, fj = self.frame[i], self.frame[j]
        if fi < 0 or fj < 0:
            return True
        return abs(fi - fj) >= self.min_gap

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        rng = random.Random(self.seed * 1_000_003 + self.epoch)
        order = list(self.sources)
        rng.shuffle(order)
        for i in order:
            yield i, rng.choice(self.partners[i])

    def __len__(self) -> int:
        return len(self.sources)
