"""The text-guided dual-mapper expression editor (METHODS.md, "Dual Mappers"): mappers that predict
appearance-latent and expression deltas of any :class:`RigGenerator`."""

from facerig.engines.dualmapper.generator import RigGenerator, check_generator

__all__ = ["RigGenerator", "check_generator"]
