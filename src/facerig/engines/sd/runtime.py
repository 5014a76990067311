"""Where and how the SD engines' modules run: dtype, device, attention kernels, compile, offload.

* :func:`resolve_dtype`: fp32 is the default everywhere (and the only sensible choice on CPU for
  fp16); ``"bf16"`` / ``"fp16"`` are opt-in for GPUs (bf16 on CPU runs, with a warning; fp16 on
  CPU is refused). ``"auto"``: fp32 on CPU, bf16 on a GPU that supports it, else fp16.
* :func:`apply_runtime`: moves modules to the device/dtype, switches the STOCK attention processors
  of diffusers models to SDPA (``sdpa=True``, diffusers' ``AttnProcessor2_0``) or the classic
  kernel (``sdpa=False``) while leaving custom processors (reference banks, FaceFusion) alone,
  optionally ``torch.compile``s them in place, and optionally offloads them for small GPUs through
  accelerate hooks: ``offload="model"`` keeps each whole module on the CPU until it runs (the
  ``enable_model_cpu_offload`` pattern: the previous one goes back when the next one starts),
  ``"sequential"`` streams submodules (least memory, slowest).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from facerig.errors import InvalidInput, MissingDependency

log = logging.getLogger(__name__)

__all__ = ["Runtime", "apply_runtime", "resolve_device", "resolve_dtype"]

_DTYPES = {
    "fp32": torch.float32, "float32": torch.float32, "float": torch.float32,
    "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
    "fp16": torch.float16, "float16": torch.float16, "half": torch.float16,
}


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None`` / ``"auto"``: CUDA when available, else CPU; otherwise the named device (checked)."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise InvalidInput("device", "cpu, cuda, cuda:N or auto", device) from e
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InvalidInput("device", "a device that exists here (no CUDA device is available)", str(device),
                           hint="use --device cpu")
    return dev


def resolve_dtype(dtype: str | torch.dtype | None, device: str | torch.device = "cpu") -> torch.dtype:
    """The compute dtype for ``device`` (see module docstring)."""
    dev = torch.device(device) if not isinstance(device, torch.device) else device
    if dtype is None or (isinstance(dtype, str) and dtype.lower() == "auto"):
        if dev.type != "cuda":
            return torch.float32
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if isinstance(dtype, torch.dtype):
        dt = dtype
    else:
        key = str(dtype).strip().lower().replace("torch.", "")
        if key not in _DTYPES:
            raise InvalidInput("dtype", "fp32, bf16, fp16 or auto", dtype)
        dt = _DTYPES[key]
    if dt not in (torch.float32, torch.bfloat16, torch.float16):
        raise InvalidInput("dtype", "fp32, bf16 or fp16", str(dt))
    if dev.type == "cpu" and dt == torch.float16:
        raise InvalidInput("dtype", "fp32 (or bf16) on the CPU", "fp16", hint="fp16 is for GPUs; use --dtype fp32")
    if dev.type == "cpu" and dt == torch.bfloat16:
        log.warning("bf16 on the CPU: supported but slower and less exact than fp32")
    return dt


@dataclass
class Runtime:
    """What :func:`apply_runtime` did (keep it: ``hooks`` offload the modules back / are removable)."""

    device: torch.device
    dtype: torch.dtype
    offload: str | None
    compiled: bool
    hooks: list[Any] = field(default_factory=list)

    def offload_all(self) -> None:
        """Model offload: put every module back on the CPU (end of a call)."""
        for h in self.hooks:
            if hasattr(h, "offload"):
                h.offload()

    def remove(self) -> None:
        for h in self.hooks:
            if hasattr(h, "remove"):
                h.remove()
        self.hooks.clear()


def _stock_processor_swap(module: torch.nn.Module, sdpa: bool) -> int:
    """Switch diffusers' stock attention processors under ``module``; custom ones stay. Returns the count."""
    from diffusers.models.attention_processor import Attention, AttnProcessor, AttnProcessor2_0

    n = 0
    for sub in module.modules():
        if isinstance(sub, Attention) and type(sub.processor) in (AttnProcessor, AttnProcessor2_0):
            proc: Any = AttnProcessor2_0() if sdpa else AttnProcessor()
            sub.set_processor(proc)
            n += 1
    return n


def _compile_targets(m: torch.nn.Module) -> list[torch.nn.Module]:
    """What to ``torch.compile`` in ``m``: its diffusers UNets / VAE when it is a container whose
    methods call them directly (``RigFaceUNets.predict_noise`` never goes through the container's
    ``__call__``, so compiling the container would do nothing), else ``m`` itself."""
    if hasattr(m, "config") and hasattr(m, "forward"):
        return [m]
    inner = [c for c in m.children() if hasattr(c, "config") and hasattr(c, "set_attn_processor")]
    return inner or [m]


def apply_runtime(modules: Mapping[str, torch.nn.Module] | Iterable[torch.nn.Module], *,
                  device: str | torch.device = "cpu", dtype: str | torch.dtype | None = None, sdpa: bool = True,
                  compile: bool = False, offload: str | None = None) -> Runtime:
    """Place and configure ``modules`` (in execution order for ``offload="model"``); see module docstring."""
    mods = list(modules.values()) if isinstance(modules, Mapping) else list(modules)
    for m in mods:
        if not isinstance(m, torch.nn.Module):
            raise InvalidInput("modules", "torch.nn.Module instances", type(m).__name__)
    if offload not in (None, "model", "sequential"):
        raise InvalidInput("offload", "None, 'model' or 'sequential'", offload)
    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    rt = Runtime(device=dev, dtype=dt, offload=offload, compiled=bool(compile))
    for m in mods:
        m.to(dtype=dt)
        _stock_processor_swap(m, sdpa)
    if offload is None:
        for m in mods:
            m.to(dev)
    else:
        try:
            import accelerate
        except ImportError as e:
            raise MissingDependency("accelerate", "offloading (--offload)", "diffusion") from e
        if offload == "model":
            prev = None
            for m in mods:
                m.to("cpu")
                _, prev = accelerate.cpu_offload_with_hook(m, execution_device=dev, prev_module_hook=prev)
                rt.hooks.append(prev)
        else:
            for m in mods:
                accelerate.cpu_offload(m, execution_device=dev)
    if compile:
        for m in mods:
            for sub in _compile_targets(m):
                sub.compile()
    log.info("runtime: %s %s sdpa=%s compile=%s offload=%s", dev, dt, sdpa, compile, offload)
    return rt
