"""Dataset preparation: photos / videos -> FFHQ-aligned crops + fitted params in WebDataset-style tar shards.

``prepare_dataset(inputs, out_dir, ...)`` (CLI: ``facerig prepare``):

1. **Plan** (deterministic, identical on every rank): the input files are listed and sorted; each
   *group* is one identity: a video, a sub-folder (``album_by_folder=True``) or a single photo. Video
   groups contribute every ``frame_stride``-th frame (at most ``max_frames``). Groups are packed, in
   sorted order, into shards of about ``shard_size`` items (a group is never split, so identity
   sharing stays inside one shard; a group larger than ``shard_size`` makes a shard of its own).
2. **Split**: shard ``j`` belongs to rank ``j % world_size`` (``--rank/--world-size``, or the
   ``RANK``/``WORLD_SIZE`` variables that torchrun / ``accelerate launch`` set); inside a rank,
   ``workers`` processes take the rank's shards.
3. **Per group**: detect (MediaPipe, largest face), FFHQ crop at ``size`` (reflect border), and fit
   the face model **on the aligned crop** (the detected landmarks are mapped into the crop, so no second
   detection): the identity is shared by the group (estimated on at most 24 key items, then fixed),
   pose/expression per item, then the photometric fit (light, albedo) against the aligned crops.
   With ``clip_crop`` a video's frames share ONE crop (that of their mean landmarks), so the face
   moves inside the crops as in the video (clip-based training: MagicPortrait stage 2).
   Params are therefore in the camera frame of a DECA crop *of the aligned image*
   (``params.crop[0].frame_size == (size, size)``); :func:`facerig.train.data.render_aligned` renders
   them pixel-aligned with the stored crop at any resolution. (Chosen over converting a fit of the
   original frame into the FFHQ frame: that needs the in-plane FFHQ rotation folded into the head pose
   AND the SH light rotated; re-fitting on the crop is exact by construction.)
4. **Write** ``shard-NNNNNN.tar`` with ``KEY.png`` (the aligned crop), ``KEY.params.json``
   (:meth:`FaceParams.to_json_dict` with the fitted per-vertex albedo; ``meta`` has ``identity``, ``source``, ``frame``), optionally
   ``KEY.buffers.npz`` (float16 ``render``, ``normal``, ``albedo`` (3, S, S), ``mask`` (1, S, S))
   and a sidecar ``shard-NNNNNN.json`` (counts, skips, timing). The tar is written to ``.tmp`` and
   renamed, so a shard either exists complete or not at all; a finished shard is never redone.
5. ``index.json``: totals over all finished shards (samples, identities, skipped items with reasons,
   throughput), the plan and the options; rewritten by every rank when it finishes.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import re
import tarfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from facerig.errors import InvalidInput

log = logging.getLogger(__name__)

__all__ = ["Group", "PrepareOptions", "plan_groups", "plan_shards", "prepare_dataset", "rank_from_env"]

IMAGE_EXT = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"}
VIDEO_EXT = {".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v"}
KEYFRAMES = 24


@dataclass
class PrepareOptions:
    crop: str = "ffhq"
    size: int = 256
    buffers: bool = False
    shard_size: int = 500
    frame_stride: int = 10
    max_frames: int | None = None      # per video, after the stride
    album_by_folder: bool = False
    limit: int | None = None           # at most this many groups (after sorting)
    model: str = "builtin"
    photometric: bool = True
    clip_crop: bool = False            # videos: one crop for all of a video's frames (the mean landmarks' crop)


@dataclass
class Group:
    """One identity's inputs: ``items`` are image paths, or frame indices of the video ``source``."""

    name: str
    kind: str                       # "images" | "video"
    source: str
    items: list[Any] = field(default_factory=list)


def rank_from_env(rank: int | None, world_size: int | None) -> tuple[int, int]:
    """Explicit values win; else torchrun's / accelerate's ``RANK`` and ``WORLD_SIZE``; else (0, 1)."""
    r = rank if rank is not None else int(os.environ.get("RANK", "0"))
    w = world_size if world_size is not None else int(os.environ.get("WORLD_SIZE", "1"))
    if w < 1 or not 0 <= r < w:
        raise InvalidInput("--rank/--world-size", "0 <= rank < world_size", f"rank {r}, world size {w}")
    return r, w


def _slug(s: str) -> str:
    """A WebDataset-safe key part (no dots: the first dot starts the member's extension)."""
    return re.sub(r"[^A-Za-z0-9_-]+", "_", s).strip("_") or "x"


def _video_frames(path: Path, stride: int, max_frames: int | None) -> list[int]:
    from facerig.io.video import probe_video

    info = probe_video(path)
    n = int(info.frame_count or 0)
    if n <= 0:  # unknown length: decode to count
        from facerig.io.video import iter_frames

        n = sum(1 for _ in iter_frames(path))
    idx = list(range(0, n, stride))
    return idx[:max_frames] if max_frames else idx


def plan_groups(inputs: Sequence[str | os.PathLike], opts: PrepareOptions) -> list[Group]:
    """Sorted identity groups of the inputs (files or folders; folders are searched recursively)."""
    files: list[tuple[Path, Path]] = []  # (root, file)
    for inp in inputs:
        p = Path(inp)
        if p.is_file():
            files.append((p.parent, p))
        elif p.is_dir():
            files += [(p, f) for f in sorted(p.rglob("*")) if f.is_file()]
        else:
            raise InvalidInput("input", "an existing image/video file or folder", str(p))
    groups: dict[str, Group] = {}
    for root, f in sorted(files, key=lambda rf: str(rf[1])):
        ext = f.suffix.lower()
        rel = f.relative_to(root) if f.is_relative_to(root) else Path(f.name)
        if ext in VIDEO_EXT:
            name = _slug(str(rel.with_suffix("")))
            groups[name] = Group(name, "video", str(f))
        elif ext in IMAGE_EXT:
            if opts.album_by_folder and len(rel.parts) > 1:
                name = _slug(str(rel.parent))
                g = groups.setdefault(name, Group(name, "images", str(root / rel.parent)))
                g.items.append(str(f))
            else:
                name = _slug(str(rel.with_suffix("")))
                groups[name] = Group(name, "images", str(f), [str(f)])
    out = sorted(groups.values(), key=lambda g: g.name)
    if opts.limit:
        out = out[: opts.limit]
    for g in out:
        if g.kind == "video":
            g.items = _video_frames(Path(g.source), opts.frame_stride, opts.max_frames)
    return [g for g in out if g.items]


def plan_shards(groups: Sequence[Group], shard_size: int) -> list[list[Group]]:
    """Pack sorted groups into shards of about ``shard_size`` items (groups are never split)."""
    shards: list[list[Group]] = []
    cur: list[Group] = []
    n = 0
    for g in groups:
        if cur and n + len(g.items) > shard_size:
            shards.append(cur)
            cur, n = [], 0
        cur.append(g)
        n += len(g.items)
    if cur:
        shards.append(cur)
    return shards


# ------------------------------------------------------------------------------------------
# per-group work


class _Worker:
    """Detector + face model, created once per process."""

    def __init__(self, opts: PrepareOptions):
        from facerig.detect import FaceDetector
        from facerig.morphable import load_face_model

        self.opts = opts
        self.det = FaceDetector()
        self.model = load_face_model(opts.model)
        self.fingerprint = self.model.fingerprint()

    def _crop_of(self, lm: Any, frame_size: tuple[int, int] | None = None) -> Any:
        from facerig.detect.crops import ffhq_crop, square_crop

        if self.opts.crop == "ffhq":
            return ffhq_crop(lm, self.opts.size, frame_size=frame_size)
        return square_crop(lm, self.opts.size, frame_size=frame_size)

    def _align(self, image: np.ndarray, lm: Any, crop: Any = None) -> tuple[np.ndarray, Any]:
        from facerig.detect.crops import crop_landmarks, warp_to_crop

        if crop is None:
            crop = self._crop_of(lm)
        return warp_to_crop(image, crop, border="reflect"), crop_landmarks(lm, crop)

    def _clip_crop_video(self, g: Group, crops: list[np.ndarray], lms: list[Any], labels: list[tuple[str, int | None]],
                         skipped: list[dict[str, Any]]) -> None:
        """One crop for all of a video's frames (``clip_crop``): landmarks of every wanted frame
        first, then the crop of their mean (the face moves inside it, as clip-based reenactment
        training wants), and a second read of the video warps each frame with it."""
        from facerig.io.video import iter_frames

        want, last = set(g.items), max(g.items)
        found: dict[int, Any] = {}
        fs: tuple[int, int] | None = None
        for i, frame in enumerate(iter_frames(g.source, max_frames=last + 1)):
            if i > last:
                break
            if i not in want:
                continue
            lm = self._detect(frame, f"{g.source}#{i}", i, skipped)
            if lm is not None:
                found[i] = lm
                fs = (int(frame.shape[0]), int(frame.shape[1]))
        if not found or fs is None:
            return
        mean = np.mean([np.asarray(found[i].points, np.float64) for i in sorted(found)], axis=0)
        crop = self._crop_of(mean, fs)
        for i, frame in enumerate(iter_frames(g.source, max_frames=last + 1)):
            if i > last:
                break
            if i in found:
                crop_img, lm_c = self._align(frame, found[i], crop)
                crops.append(crop_img)
                lms.append(lm_c)
                labels.append((f"{g.source}#{i}", i))

    def group_samples(self, g: Group, skipped: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Aligned crops + params of one group (items without a face go to ``skipped``)."""
        from facerig.errors import FacerigError
        from facerig.io.image import load_image

        crops: list[np.ndarray] = []
        lms: list[Any] = []
        labels: list[tuple[str, int | None]] = []
        if g.kind == "video" and self.opts.clip_crop:
            self._clip_crop_video(g, crops, lms, labels, skipped)
        elif g.kind == "video":
            from facerig.io.video import iter_frames

            want = set(g.items)
            last = max(g.items)
            for i, frame in enumerate(iter_frames(g.source, max_frames=last + 1)):
                if i > last:
                    break
                if i not in want:
                    continue
                self._detect_align(frame, f"{g.source}#{i}", i, crops, lms, labels, skipped)
        else:
            for path in g.items:
                try:
                    img = load_image(path)
                except FacerigError as e:
                    skipped.append({"group": g.name, "source": path, "frame": None, "reason": f"unreadable: {e}"})
                    continue
                self._detect_align(img, path, None, crops, lms, labels, skipped)
        if not crops:
            return []
        params = self._fit(lms, crops)
        out = []
        for k, (crop_img, (src, frame_no)) in enumerate(zip(crops, labels, strict=True)):
            p = params[k]
            p.meta = {"identity": g.name, "source": src, "frame": frame_no, "crop": self.opts.crop,
                      "clip_crop": bool(self.opts.clip_crop and g.kind == "video"),
                      "size": self.opts.size, "face_model": self.fingerprint}
            item = Path(src).stem if frame_no is None else f"f{frame_no:06d}"
            out.append({"key": f"{g.name}__{_slug(item)}", "image": crop_img, "params": p})
        return out

    def _detect(self, image, src, frame, skipped) -> Any:
        """The largest face's landmarks, or None (recorded in ``skipped``)."""
        from facerig.errors import NoFaceFound

        try:
            return self.det.detect_one(image, source=src, frame_index=frame or 0)
        except NoFaceFound as e:
            skipped.append({"source": src, "frame": frame, "reason": str(e).split(":")[0]
                            if "too small" in str(e) else "no face"})
            return None

    def _detect_align(self, image, src, frame, crops, lms, labels, skipped) -> None:
        lm = self._detect(image, src, frame, skipped)
        if lm is None:
            return
        crop_img, lm_c = self._align(image, lm)
        crops.append(crop_img)
        lms.append(lm_c)
        labels.append((src, frame))

    def _fit(self, lms: list[Any], crops: list[np.ndarray]) -> Any:
        from facerig.fit.api import FitConfig, fit_landmark_sets

        cfg = FitConfig()
        keys = [int(round(k)) for k in np.linspace(0, len(lms) - 1, min(KEYFRAMES, len(lms)))]
        if len(lms) > 1:
            key_p = fit_landmark_sets(self.model, [lms[k] for k in keys], cfg, share_identity=True)
            params = fit_landmark_sets(self.model, lms, cfg, fixed_identity=key_p.identity[:1])
        else:
            params = fit_landmark_sets(self.model, lms, cfg)
        if self.opts.photometric:
            from facerig.fit.photometric import fit_photometric

            params, _ = fit_photometric(self.model, params, crops, share_albedo=len(lms) > 1)
        return params.detach()

    def buffers_npz(self, params: Any) -> bytes:
        import torch

        from facerig.train.data import render_aligned

        with torch.no_grad():
            b = render_aligned(self.model, params, self.opts.size)
        arrs = {n: getattr(b, n)[0].numpy().astype(np.float16) for n in ("render", "normal", "albedo", "mask")}
        bio = io.BytesIO()
        np.savez(bio, **arrs)
        return bio.getvalue()


def _png(image: np.ndarray) -> bytes:
    from PIL import Image

    bio = io.BytesIO()
    Image.fromarray(image).save(bio, format="PNG", compress_level=3)
    return bio.getvalue()


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    ti = tarfile.TarInfo(name)
    ti.size = len(data)
    ti.mtime = 0
    tar.addfile(ti, io.BytesIO(data))


_WORKER: _Worker | None = None


def _init_worker(opts: PrepareOptions, threads: int) -> None:
    global _WORKER
    import torch

    torch.set_num_threads(max(1, threads))
    _WORKER = _Worker(opts)


def _write_shard(job: tuple[int, list[Group], str]) -> dict[str, Any]:
    """Process one shard's groups and write it atomically; returns the shard's stats."""
    sid, groups, out = job
    assert _WORKER is not None
    w = _WORKER
    t0 = time.perf_counter()
    final = Path(out) / f"shard-{sid:06d}.tar"
    tmp = final.with_suffix(".tar.tmp")
    skipped: list[dict[str, Any]] = []
    samples: list[dict[str, Any]] = []
    n_items = sum(len(g.items) for g in groups)
    with tarfile.open(tmp, "w") as tar:
        for g in groups:
            gs: list[dict[str, Any]] = []
            g_skipped: list[dict[str, Any]] = []
            gs = w.group_samples(g, g_skipped)
            for s in g_skipped:
                s.setdefault("group", g.name)
            skipped += g_skipped
            for s in gs:
                _add(tar, f"{s['key']}.png", _png(s["image"]))
                pj = json.dumps(s["params"].to_json_dict(include_albedo=True)).encode()
                _add(tar, f"{s['key']}.params.json", pj)
                if w.opts.buffers:
                    _add(tar, f"{s['key']}.buffers.npz", w.buffers_npz(s["params"]))
                samples.append({"key": s["key"], "identity": g.name, "frame": s["params"].meta["frame"]})
    os.replace(tmp, final)
    stats = {
        "shard": sid, "file": final.name, "groups": [g.name for g in groups], "items": n_items,
        "samples": len(samples), "identities": len({s["identity"] for s in samples}),
        "skipped": skipped, "seconds": time.perf_counter() - t0, "face_model": w.fingerprint,
        "sample_list": samples,
    }
    tmpj = final.with_suffix(".json.tmp")
    tmpj.write_text(json.dumps(stats, indent=1))
    os.replace(tmpj, final.with_suffix(".json"))
    return stats


def _plan_digest(shards: list[list[Group]], opts: PrepareOptions) -> str:
    d = json.dumps([[(g.name, g.source, g.items) for g in s] for s in shards] + [asdict(opts)], default=str)
    return hashlib.sha1(d.encode()).hexdigest()[:12]


def write_index(out: Path, shards: list[list[Group]], opts: PrepareOptions, extra: dict[str, Any]) -> dict[str, Any]:
    """Aggregate the sidecars of all finished shards into ``index.json`` (atomic replace)."""
    done = []
    for j in range(len(shards)):
        side = out / f"shard-{j:06d}.json"
        if side.is_file() and (out / f"shard-{j:06d}.tar").is_file():
            done.append(json.loads(side.read_text()))
    reasons: dict[str, int] = {}
    for s in done:
        for k in s["skipped"]:
            reasons[k["reason"]] = reasons.get(k["reason"], 0) + 1
    secs = sum(s["seconds"] for s in done)
    items = sum(s["items"] for s in done)
    idx = {
        "format": "facerig.shards/1",
        "num_shards": len(shards),
        "finished_shards": len(done),
        "complete": len(done) == len(shards),
        "samples": sum(s["samples"] for s in done),
        "identities": len({i["identity"] for s in done for i in s["sample_list"]}),
        "items": items,
        "skipped": sum(len(s["skipped"]) for s in done),
        "skipped_reasons": reasons,
        "skipped_items": [k for s in done for k in s["skipped"]],
        "face_model": done[0]["face_model"] if done else None,
        "throughput": {"worker_seconds": round(secs, 2),
                       "items_per_worker_second": round(items / secs, 3) if secs else None},
        "shards": [{"file": s["file"], "samples": s["samples"], "groups": s["groups"]} for s in done],
        "options": asdict(opts),
        "plan": _plan_digest(shards, opts),
    }
    idx.update(extra)
    tmp = out / "index.json.tmp"
    tmp.write_text(json.dumps(idx, indent=1))
    os.replace(tmp, out / "index.json")
    return idx


def prepare_dataset(
    inputs: Sequence[str | os.PathLike] | str | os.PathLike,
    out_dir: str | os.PathLike,
    options: PrepareOptions | None = None,
    *,
    workers: int = 1,
    rank: int | None = None,
    world_size: int | None = None,
    progress: bool | Callable[[int, int], None] = False,
) -> dict[str, Any]:
    """Prepare shards (see the module docstring); returns the index dict (and ``run``: this call's
    shards done / skipped as already finished / wall seconds / items per second)."""
    opts = options or PrepareOptions()
    if opts.crop not in ("ffhq", "square"):
        raise InvalidInput("--crop", "ffhq or square", opts.crop)
    if opts.size < 16 or opts.shard_size < 1 or opts.frame_stride < 1:
        raise InvalidInput("--size/--shard-size/--frame-stride", "size >= 16, others >= 1",
                           (opts.size, opts.shard_size, opts.frame_stride))
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    r, w = rank_from_env(rank, world_size)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    groups = plan_groups(inputs, opts)
    if not groups:
        raise InvalidInput("input", "at least one image or video", [str(i) for i in inputs])
    shards = plan_shards(groups, opts.shard_size)
    mine = [j for j in range(len(shards)) if j % w == r]
    todo = [j for j in mine if not (out / f"shard-{j:06d}.tar").is_file()
            or not (out / f"shard-{j:06d}.json").is_file()]
    for j in mine:  # a partial shard from an interrupted run is rewritten from scratch
        for suf in (".tar.tmp", ".json.tmp"):
            (out / f"shard-{j:06d}{suf}").unlink(missing_ok=True)
    jobs = [(j, shards[j], str(out)) for j in todo]
    total_items = sum(len(shards[j][k].items) for j in todo for k in range(len(shards[j])))
    bar = None
    cb = progress if callable(progress) else None
    if progress is True:
        from tqdm import tqdm

        bar = tqdm(total=total_items, unit="img", desc=f"prepare rank {r}/{w}")
    done_items = 0
    results = []

    def _done(st: dict[str, Any]) -> None:
        nonlocal done_items
        results.append(st)
        done_items += st["items"]
        if bar is not None:
            bar.update(st["items"])
            bar.set_postfix(samples=sum(x["samples"] for x in results), skipped=sum(len(x["skipped"]) for x in results))
        if cb is not None:
            cb(done_items, total_items)
        for s in st["skipped"]:
            log.info("skipped %s (frame %s): %s", s["source"], s["frame"], s["reason"])

    n_workers = max(1, min(int(workers), len(jobs) or 1))
    if jobs and n_workers == 1:
        _init_worker(opts, max(1, (os.cpu_count() or 1)))
        for job in jobs:
            _done(_write_shard(job))
    elif jobs:
        import multiprocessing as mp

        threads = max(1, (os.cpu_count() or 1) // n_workers)
        ctx = mp.get_context("spawn")
        with ctx.Pool(n_workers, initializer=_init_worker, initargs=(opts, threads)) as pool:
            for st in pool.imap_unordered(_write_shard, jobs):
                _done(st)
    if bar is not None:
        bar.close()
    wall = time.perf_counter() - t0
    run = {"rank": r, "world_size": w, "shards_done": len(todo), "shards_already_done": len(mine) - len(todo),
           "items": done_items, "wall_seconds": round(wall, 2),
           "items_per_second": round(done_items / wall, 3) if done_items and wall > 0 else None}
    idx = write_index(out, shards, opts, {"last_run": run})
    idx["run"] = run
    return idx
