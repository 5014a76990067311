"""DiffusionRig (Ding et al., CVPR 2023): a pixel-space ADM UNet conditioned on DECA-style physical
buffers [render, normal, albedo] and a 64-d global code from a ResNet-18 encoder.

* :mod:`.model` -- :class:`DiffusionRigUNet`, :class:`GlobalEncoder` (diffusers ModelMixin/ConfigMixin);
* :mod:`.checkpoint` -- :func:`load_official_checkpoint` for the authors' ``model_*.pt`` (strict keys);
* :mod:`.buffers` -- :func:`model_buffers`, RenderBuffers -> the 9 conditioning channels;
* :mod:`.pipeline` -- :class:`DiffusionRigPipeline` (DDIM/DDPM sampling, fixed noise, code swap);
* :mod:`.training` -- :class:`DiffusionRigTrainModule` (P2-weighted epsilon loss).

Importing this package imports diffusers (a few seconds); import it lazily from CLIs.
"""

from .buffers import BUFFER_ORDER, model_buffers
from .checkpoint import CheckpointMismatch, load_official_checkpoint, official_state_dict
from .model import PAPER_UNET_CONFIG, TINY_UNET_CONFIG, DiffusionRigUNet, GlobalEncoder
from .pipeline import DiffusionRigPipeline, make_scheduler
from .training import DiffusionRigTrainModule

__all__ = [
    "BUFFER_ORDER",
    "CheckpointMismatch",
    "DiffusionRigPipeline",
    "DiffusionRigTrainModule",
    "DiffusionRigUNet",
    "GlobalEncoder",
    "PAPER_UNET_CONFIG",
    "TINY_UNET_CONFIG",
    "load_official_checkpoint",
    "make_scheduler",
    "model_buffers",
    "official_state_dict",
]
