"""An accelerate-based trainer shared by facerig's engines.

``Trainer(module, dataset, config, output_dir)`` trains ``module`` -- an ``nn.Module`` whose
``forward(batch, generator)`` returns the scalar loss (e.g.
:class:`facerig.engines.diffusionrig.training.DiffusionRigTrainModule`) -- on a map-style dataset.

* Processes: whatever accelerate/torchrun launched (DDP; gloo on CPU). Gradients are averaged
  across processes; with ``grad_accum`` > 1 the intermediate micro-batches skip the all-reduce.
* Mixed precision (``no``/``fp16``/``bf16``) through ``accelerator.autocast`` and its grad scaler;
  gradient clipping on the unscaled gradients; gradient checkpointing through each submodule's
  ``enable_gradient_checkpointing()`` (diffusers models).
* LR schedules ``constant``, ``constant_with_warmup``, ``linear``, ``cosine`` (warmup then decay to 0
  at ``max_steps``), stepped once per optimizer step. EMA of the trainable parameters (float32).
* Data order: a seeded permutation per epoch, cut into global batches, each process taking its
  share; the position (epoch, batch) is part of the checkpoint, so resuming continues with the very
  next batch. Randomness of the loss (noise, timesteps) comes from a per-process ``torch.Generator``
  passed to ``forward``; it, torch's global RNG (dropout), Python's and NumPy's RNGs are saved per
  process. Resuming therefore reproduces the uninterrupted run exactly (same platform and settings).
* Checkpoints ``output_dir/checkpoints/step_NNNNNNN/``: ``model.safetensors``, ``ema.safetensors``,
  ``optimizer.pt``, ``lr_scheduler.pt``, ``scaler.pt`` (fp16), ``rank_R.pt`` (position + RNG of
  process R), ``trainer.json``; written into a hidden temporary folder then renamed, and
  ``checkpoints/latest`` is replaced atomically; all ``.pt`` files load with ``weights_only=True``.
* Logging (main process): TensorBoard when the ``tensorboard`` package is installed, else
  ``metrics.csv`` (``step,name,value``); sample grids ``samples/step_NNNNNNN.png`` every
  ``sample_every`` steps from ``sample_fn(module, step) -> (N, 3, H, W) in [0, 1]``.
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import random
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler, default_collate

from facerig.errors import InvalidInput

from .config import TrainConfig

__all__ = ["EMA", "Trainer", "lr_lambda", "state_digest"]


def state_digest(module: nn.Module) -> str:
    """SHA-256 of a module's state (names and float32 values, sorted by name): equal on every
    process of a distributed run whose replicas are in sync."""
    import hashlib

    h = hashlib.sha256()
    for n, p in sorted(module.state_dict().items()):
        h.update(n.encode())
        h.update(p.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def lr_lambda(name: str, warmup: int, total: int) -> Callable[[int], float]:
    """Multiplier of the base LR at optimizer step ``s`` (0-based)."""

    def f(s: int) -> float:
        if name != "constant" and warmup > 0 and s < warmup:
            return (s + 1) / warmup
        if name in ("constant", "constant_with_warmup"):
            return 1.0
        frac = min(1.0, (s - warmup) / max(1, total - warmup))
        if name == "linear":
            return max(0.0, 1.0 - frac)
        return 0.5 * (1.0 + math.cos(math.pi * frac))  # cosine

    return f


class EMA:
    """Exponential moving average of a module's trainable parameters (kept in float32).
    With ``warmup`` the decay is ``min(decay, (1 + n) / (10 + n))`` after ``n`` updates."""

    def __init__(self, module: nn.Module, decay: float = 0.9999, warmup: bool = True):
        self.decay = decay
        self.warmup = warmup
        self.num_updates = 0
        self.shadow = {n: p.detach().float().clone() for n, p in module.named_parameters() if p.requires_grad}

    def current_decay(self) -> float:
        n = self.num_updates
        return min(self.decay, (1 + n) / (10 + n)) if self.warmup else self.decay

    @torch.no_grad()
    def update(self, module: nn.Module) -> None:
        d = self.current_decay()
        for n, p in module.named_parameters():
            if n in self.shadow:
                self.shadow[n].lerp_(p.detach().float(), 1.0 - d)
        self.num_updates += 1

    @torch.no_grad()
    def copy_to(self, module: nn.Module) -> None:
        for n, p in module.named_parameters():
            if n in self.shadow:
                p.copy_(self.shadow[n].to(p.dtype))

    @contextlib.contextmanager
    def swapped(self, module: nn.Module) -> Iterator[None]:
        """Temporarily load the EMA weights into ``module``."""
        backup = {n: p.detach().clone() for n, p in module.named_parameters() if n in self.shadow}
        self.copy_to(module)
        try:
            yield
        finally:
            with torch.no_grad():
                for n, p in module.named_parameters():
                    if n in backup:
                        p.copy_(backup[n])


class _Batches(Sampler[list[int]]):
    """This process's batches of one epoch, starting at batch ``start``."""

    def __init__(self, n: int, batch: int, rank: int, world: int, seed: int, epoch: int, start: int):
        self.n, self.batch, self.rank, self.world = n, batch, rank, world
        self.seed, self.epoch, self.start = seed, epoch, start

    def batches_per_epoch(self) -> int:
        return self.n // (self.batch * self.world)

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        perm = torch.randperm(self.n, generator=g).tolist()
        gb = self.batch * self.world
        for b in range(self.start, self.batches_per_epoch()):
            chunk = perm[b * gb : (b + 1) * gb]
            yield chunk[self.rank * self.batch : (self.rank + 1) * self.batch]

    def __len__(self) -> int:
        return max(0, self.batches_per_epoch() - self.start)


def _to(obj: Any, device: torch.device) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.to(device, non_blocking=True)
    if isinstance(obj, dict):
        return {k: _to(v, device) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(_to(v, device) for v in obj)
    return obj


class _Metrics:
    def __init__(self, out: Path, kind: str):
        self.tb = None
        if kind in ("auto", "tensorboard"):
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(out / "tensorboard"))
            except ImportError:
                if kind == "tensorboard":
                    raise InvalidInput(
                        "train.logger", "the tensorboard package installed", "not installed"
                    ) from None
        self.csv_path = out / "metrics.csv"
        if self.tb is None and not self.csv_path.exists():
            self.csv_path.write_text("step,name,value\n")

    def log(self, step: int, values: dict[str, float]) -> None:
        if self.tb is not None:
            for k, v in values.items():
                self.tb.add_scalar(k, v, step)
            self.tb.flush()
            return
        with open(self.csv_path, "a", newline="") as f:
            w = csv.writer(f)
            for k, v in values.items():
                w.writerow([step, k, f"{v:.8g}"])

    def image(self, step: int, grid: np.ndarray) -> None:
        if self.tb is not None:
            self.tb.add_image("samples", grid, step, dataformats="HWC")


def _grid(images: torch.Tensor) -> np.ndarray:
    x = images.detach().float().clamp(0, 1).cpu()
    n = x.shape[0]
    cols = int(math.ceil(math.sqrt(n)))
    rows = int(math.ceil(n / cols))
    _, c, h, w = x.shape
    canvas = torch.zeros(3, rows * h, cols * w)
    for i in range(n):
        r, q = divmod(i, cols)
        canvas[:, r * h : (r + 1) * h, q * w : (q + 1) * w] = x[i, :3] if c >= 3 else x[i, :1].expand(3, h, w)
    return (canvas.permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)


class Trainer:
    """See the module docstring. ``run()`` trains to ``config.max_steps`` (resuming first when
    ``resume`` is ``"latest"`` or a checkpoint folder) and returns the unwrapped module."""

    def __init__(
        self,
        module: nn.Module,
        dataset: Dataset,
        config: TrainConfig,
        output_dir: str | os.PathLike,
        *,
        collate_fn: Callable | None = None,
        sample_fn: Callable[[nn.Module, int], torch.Tensor] | None = None,
        export_fn: Callable[[nn.Module, Path], None] | None = None,
        accelerator: Any = None,
    ):
        from accelerate import Accelerator

        self.config = config
        self.out = Path(output_dir)
        # cpu=True on machines without an accelerator: without it accelerate ignores torchrun's
        # WORLD_SIZE/LOCAL_RANK there and every process trains alone (DistributedType.NO)
        self.acc = accelerator or Accelerator(
            mixed_precision=config.mixed_precision, cpu=not _has_accelerator()
        )
        self.rank = self.acc.process_index
        self.world = self.acc.num_processes
        self.dataset = dataset
        self.collate_fn = collate_fn or default_collate
        self.sample_fn = sample_fn
        self.export_fn = export_fn
        if len(dataset) < config.batch_size * self.world:  # type: ignore[arg-type]  # Dataset stub: no __len__
            raise InvalidInput(
                "dataset",
                f"at least batch_size x processes = {config.batch_size * self.world} items",
                len(dataset),  # type: ignore[arg-type]  # torch's Dataset stub has no __len__
            )
        if config.gradient_checkpointing:
            n = 0
            for m in module.modules():
                if getattr(m, "_supports_gradient_checkpointing", False) and hasattr(
                    m, "enable_gradient_checkpointing"
                ):
                    cast(Any, m).enable_gradient_checkpointing()  # duck-typed (diffusers ModelMixin)
                    n += 1
            if n == 0:
                raise InvalidInput(
                    "train.gradient_checkpointing",
                    "a module with checkpointable submodules",
                    type(module).__name__,
                )
        params = [p for p in module.parameters() if p.requires_grad]
        self.optimizer = (
            torch.optim.AdamW(
                params,
                lr=config.lr,
                betas=config.adam_betas,
                eps=config.adam_eps,
                weight_decay=config.weight_decay,
            )
            if config.weight_decay
            else torch.optim.Adam(params, lr=config.lr, betas=config.adam_betas, eps=config.adam_eps)
        )
        self.lr_scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lr_lambda(config.lr_schedule, config.warmup_steps, config.max_steps)
        )
        self.model, self.optimizer = self.acc.prepare(module, self.optimizer)
        self.ema = EMA(self.unwrapped, config.ema_decay, config.ema_warmup) if config.ema_decay else None
        self.generator = torch.Generator().manual_seed(config.seed * 7919 + self.rank)
        torch.manual_seed(config.seed * 7919 + 104729 * (self.rank + 1))
        random.seed(config.seed + self.rank)
        np.random.seed((config.seed + self.rank) % 2**32)  # noqa: NPY002 - the global RNG user code may use
        self.step = 0
        self.epoch = 0
        self.batch_in_epoch = 0
        self.metrics = None
        if self.acc.is_main_process:
            self.out.mkdir(parents=True, exist_ok=True)
            self.metrics = _Metrics(self.out, config.logger)

    # ---- helpers ------------------------------------------------------------------------
    @property
    def unwrapped(self) -> nn.Module:
        return self.acc.unwrap_model(self.model)

    def _loader(self) -> tuple[DataLoader, int]:
        bs = _Batches(
            len(self.dataset),  # type: ignore[arg-type]  # torch's Dataset stub has no __len__
            self.config.batch_size,
            self.rank,
            self.world,
            self.config.seed,
            self.epoch,
            self.batch_in_epoch,
        )
        # a private generator: creating a loader iterator must not draw from the global RNG (it would
        # shift dropout after a resume, which creates the iterator mid-epoch)
        g = torch.Generator().manual_seed(self.config.seed * 31 + self.epoch * 7 + self.rank)
        loader = DataLoader(
            self.dataset,
            batch_sampler=bs,
            num_workers=self.config.num_workers,
            collate_fn=self.collate_fn,
            generator=g,
        )
        return loader, bs.batches_per_epoch()

    def _batches(self) -> Iterator[Any]:
        while True:
            loader, per_epoch = self._loader()
            for batch in loader:
                self.batch_in_epoch += 1
                yield batch
            self.epoch += 1
            self.batch_in_epoch = 0
            if per_epoch == 0:
                raise InvalidInput("dataset", "enough items for one batch per process", len(self.dataset))  # type: ignore[arg-type]

    # ---- training -----------------------------------------------------------------------
    def run(self, resume: str | os.PathLike | None = None, stop_after: int | None = None) -> nn.Module:
        """Train until ``config.max_steps`` (or until step ``stop_after``, e.g. to split a run; a
        checkpoint is saved there)."""
        cfg = self.config
        end = cfg.max_steps if stop_after is None else min(cfg.max_steps, int(stop_after))
        if resume is not None:
            self.load_checkpoint(resume)
        batches = self._batches()
        self.model.train()
        t0 = time.perf_counter()
        while self.step < end:
            total = torch.zeros((), device=self.acc.device)
            for micro in range(cfg.grad_accum):
                batch = _to(next(batches), self.acc.device)
                sync = micro == cfg.grad_accum - 1
                ctx = contextlib.nullcontext() if sync or self.world == 1 else self.acc.no_sync(self.model)
                with ctx:  # no all-reduce on the intermediate micro-batches
                    with self.acc.autocast():
                        loss = self.model(batch, self.generator)
                    self.acc.backward(loss / cfg.grad_accum)
                total += loss.detach().float() / cfg.grad_accum
            grad_norm = None
            if cfg.grad_clip:
                grad_norm = self.acc.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
            self.optimizer.step()
            self.lr_scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
            if self.ema is not None:
                self.ema.update(self.unwrapped)
            self.step += 1
            if self.step % cfg.log_every == 0 or self.step == cfg.max_steps:
                mean_loss = self.acc.reduce(total, reduction="mean").item()
                if self.metrics is not None:
                    vals = {
                        "loss": mean_loss,
                        "lr": self.lr_scheduler.get_last_lr()[0],
                        "step_time": (time.perf_counter() - t0) / cfg.log_every,
                    }
                    if grad_norm is not None:
                        vals["grad_norm"] = float(grad_norm)
                    self.metrics.log(self.step, vals)
                t0 = time.perf_counter()
            if cfg.sample_every and self.sample_fn is not None and self.step % cfg.sample_every == 0:
                self._sample()
            if self.step % cfg.save_every == 0 or self.step == end:
                self.save_checkpoint()
        if self.export_fn is not None and self.acc.is_main_process and self.step == cfg.max_steps:
            mod = self.unwrapped
            with self.ema.swapped(mod) if self.ema is not None else contextlib.nullcontext():
                self.export_fn(mod, self.out / "final")
        self.acc.wait_for_everyone()
        return self.unwrapped

    @torch.no_grad()
    def _sample(self) -> None:
        if not self.acc.is_main_process:
            return
        mod = self.unwrapped
        was = mod.training
        mod.eval()
        rng = torch.get_rng_state()  # sampling must not shift the training randomness
        with self.ema.swapped(mod) if self.ema is not None else contextlib.nullcontext():
            images = self.sample_fn(mod, self.step)  # type: ignore[misc]
        torch.set_rng_state(rng)
        mod.train(was)
        grid = _grid(images)
        d = self.out / "samples"
        d.mkdir(exist_ok=True)
        from PIL import Image

        Image.fromarray(grid).save(d / f"step_{self.step:07d}.png")
        if self.metrics is not None:
            self.metrics.image(self.step, grid)

    # ---- checkpoints --------------------------------------------------------------------
    def _rank_state(self) -> dict[str, Any]:
        # legacy=True (the default) returns the tuple form; the stub's union includes the dict form
        np_state = cast(tuple[Any, ...], np.random.get_state())  # noqa: NPY002
        return {
            "step": self.step,
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            "generator": self.generator.get_state(),
            "torch_rng": torch.get_rng_state(),
            "python_rng": random.getstate(),
            "numpy_rng": [
                np_state[0],
                torch.from_numpy(np_state[1].astype(np.int64)),
                *map(float, np_state[2:]),
            ],
            "world": self.world,
        }

    def save_checkpoint(self) -> Path:
        root = self.out / "checkpoints"
        final = root / f"step_{self.step:07d}"
        tmp = root / f".tmp_step_{self.step:07d}"
        if self.acc.is_main_process:
            root.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir()
        self.acc.wait_for_everyone()
        torch.save(self._rank_state(), tmp / f"rank_{self.rank}.pt")
        if self.acc.is_main_process:
            sd = {k: v.detach().contiguous() for k, v in self.unwrapped.state_dict().items()}
            save_file(sd, tmp / "model.safetensors")
            if self.ema is not None:
                save_file(
                    {k: v.contiguous() for k, v in self.ema.shadow.items()},
                    tmp / "ema.safetensors",
                    metadata={"num_updates": str(self.ema.num_updates)},
                )
            torch.save(self.optimizer.state_dict(), tmp / "optimizer.pt")
            torch.save(self.lr_scheduler.state_dict(), tmp / "lr_scheduler.pt")
            if self.acc.scaler is not None:
                torch.save(self.acc.scaler.state_dict(), tmp / "scaler.pt")
            (tmp / "trainer.json").write_text(
                json.dumps(
                    {"step": self.step, "world": self.world, "config": _jsonable(self.config)}, indent=1
                )
            )
        self.acc.wait_for_everyone()
        if self.acc.is_main_process:
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
            latest_tmp = root / ".latest.tmp"
            latest_tmp.write_text(final.name + "\n")
            os.replace(latest_tmp, root / "latest")
            done = sorted(p for p in root.glob("step_*") if p.is_dir())
            for old in done[: -self.config.keep_checkpoints]:
                shutil.rmtree(old, ignore_errors=True)
        self.acc.wait_for_everyone()
        return final

    def resolve_checkpoint(self, which: str | os.PathLike) -> Path:
        root = self.out / "checkpoints"
        if str(which) == "latest":
            f = root / "latest"
            if not f.is_file():
                raise InvalidInput("resume", f"a checkpoint under {root}", "none saved yet")
            return root / f.read_text().strip()
        return Path(which)

    def load_checkpoint(self, which: str | os.PathLike) -> None:
        d = self.resolve_checkpoint(which)
        rank_file = d / f"rank_{self.rank}.pt"
        if not rank_file.is_file():
            raise InvalidInput("resume", f"a checkpoint with state for process {self.rank}", str(d))
        st = torch.load(rank_file, weights_only=True)
        if int(st["world"]) != self.world:
            raise InvalidInput(
                "resume",
                f"a checkpoint saved with {self.world} processes (exact data position)",
                f"{st['world']} processes",
            )
        self.unwrapped.load_state_dict(load_file(d / "model.safetensors"), strict=True)
        self.optimizer.load_state_dict(torch.load(d / "optimizer.pt", weights_only=True))
        self.lr_scheduler.load_state_dict(torch.load(d / "lr_scheduler.pt", weights_only=True))
        if self.acc.scaler is not None and (d / "scaler.pt").is_file():
            self.acc.scaler.load_state_dict(torch.load(d / "scaler.pt", weights_only=True))
        if self.ema is not None and (d / "ema.safetensors").is_file():
            from safetensors import safe_open

            self.ema.shadow = load_file(d / "ema.safetensors")
            with safe_open(d / "ema.safetensors", "pt") as f:
                self.ema.num_updates = int((f.metadata() or {}).get("num_updates", 0))
        self.step = int(st["step"])
        self.epoch = int(st["epoch"])
        self.batch_in_epoch = int(st["batch_in_epoch"])
        self.generator.set_state(st["generator"])
        torch.set_rng_state(st["torch_rng"])
        random.setstate(_tuplify(st["python_rng"]))
        name, keys, pos, has_gauss, cached = st["numpy_rng"]
        np.random.set_state((name, keys.numpy().astype(np.uint32), int(pos), int(has_gauss), float(cached)))  # noqa: NPY002


def _has_accelerator() -> bool:
    acc = getattr(torch, "accelerator", None)
    if acc is not None and hasattr(acc, "is_available"):
        return bool(acc.is_available())
    return torch.cuda.is_available()


def _tuplify(x: Any) -> Any:
    return tuple(_tuplify(v) for v in x) if isinstance(x, list | tuple) else x


def _jsonable(cfg: Any) -> Any:
    import dataclasses

    return dataclasses.asdict(cast(Any, cfg)) if dataclasses.is_dataclass(cfg) else cfg
