"""Schedulers for the SD engines, from diffusers: UniPC, DDIM, DDPM.

:func:`make_scheduler` builds one from a base model's scheduler config (SD 1.5's ships a PNDM
config: the noise schedule is what matters; the class-specific keys of another class are dropped by
diffusers' ``from_config``). Options:

* ``prediction_type``: ``"epsilon"`` (SD 1.5, RigFace) or ``"v_prediction"``;
* ``zero_terminal_snr``: rescale the betas to zero terminal SNR (diffusers'
  ``rescale_betas_zero_snr``; use with ``timestep_spacing="trailing"`` and v-prediction, as in
  Lin et al. 2024);
* ``timestep_spacing``: ``"linspace"`` / ``"leading"`` / ``"trailing"``.

``make_scheduler("unipc", sd15_config)`` is the RigFace release's sampler: UniPC from the SD 1.5
config, which there resolves to spacing "linspace", solver order 2, ``bh2``, predicting x0,
epsilon, the last step ending at sigma(t=0) (``final_sigmas_type="sigma_min"``; diffusers' later
default "zero" changes the result): 50 steps are the timesteps 999, 979, ..., 20.
"""

from __future__ import annotations

from typing import Any

from facerig.errors import InvalidInput

__all__ = ["RELEASE_UNIPC", "SCHEDULERS", "make_scheduler"]

SCHEDULERS = {
    "unipc": "UniPCMultistepScheduler",
    "ddim": "DDIMScheduler",
    "ddpm": "DDPMScheduler",
}
_PREDICTIONS = ("epsilon", "v_prediction", "sample")
_SPACINGS = ("linspace", "leading", "trailing")

#: what UniPC resolves to from SD 1.5's scheduler config in the diffusers version RigFace pins
RELEASE_UNIPC: dict[str, Any] = {"timestep_spacing": "linspace", "solver_order": 2, "solver_type": "bh2",
                                 "predict_x0": True, "prediction_type": "epsilon",
                                 "final_sigmas_type": "sigma_min"}

#: SD 1.5's noise schedule, used when no base config is given
_SD15_SCHEDULE: dict[str, Any] = {"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012,
                                  "beta_schedule": "scaled_linear", "steps_offset": 1}


def make_scheduler(name: str = "unipc", base_config: dict[str, Any] | None = None, *,
                   prediction_type: str | None = None, zero_terminal_snr: bool = False,
                   timestep_spacing: str | None = None, **overrides: Any) -> Any:
    """A diffusers scheduler ``name`` with the base config's noise schedule (see module docstring)."""
    import diffusers

    key = str(name).strip().lower()
    if key not in SCHEDULERS:
        raise InvalidInput("scheduler", f"one of {', '.join(SCHEDULERS)}", name)
    if base_config is not None and not isinstance(base_config, dict):
        raise InvalidInput("base_config", "a scheduler config dict (or None for SD 1.5's)", type(base_config).__name__)
    if prediction_type is not None and prediction_type not in _PREDICTIONS:
        raise InvalidInput("prediction_type", f"one of {', '.join(_PREDICTIONS)}", prediction_type)
    if timestep_spacing is not None and timestep_spacing not in _SPACINGS:
        raise InvalidInput("timestep_spacing", f"one of {', '.join(_SPACINGS)}", timestep_spacing)
    cls = getattr(diffusers, SCHEDULERS[key])
    cfg = {k: v for k, v in (base_config if base_config is not None else _SD15_SCHEDULE).items()
           if not k.startswith("_")}
    if key == "unipc":
        # as the release: the class defaults (order 2, bh2, x0) with the base's schedule; a PNDM
        # config carries no spacing key, so UniPC's default "linspace" applies
        cfg.setdefault("timestep_spacing", RELEASE_UNIPC["timestep_spacing"])
        # diffusers 0.22 (the release's) ends at sigma(t=0); later versions default to sigma 0,
        # which moves the final latent by ~0.06 (tests/engines/rigface/authors)
        cfg.setdefault("final_sigmas_type", RELEASE_UNIPC["final_sigmas_type"])
    if key == "ddim":
        cfg.setdefault("clip_sample", False)
    if prediction_type is not None:
        cfg["prediction_type"] = prediction_type
    if timestep_spacing is not None:
        cfg["timestep_spacing"] = timestep_spacing
    if zero_terminal_snr:
        cfg["rescale_betas_zero_snr"] = True
    cfg.update(overrides)
    sched = cls.from_config(cfg)
    return sched
