"""The generator registry: names, typed errors for unknown names and options."""

from __future__ import annotations

import numpy as np
import pytest

from facerig.engines.dualmapper.adapters import GENERATORS, build_generator
from facerig.errors import InvalidInput


def test_registry_names():
    assert set(GENERATORS) == {"warp", "diffusionrig", "next3d"}


def test_unknown_name_is_invalid_input():
    with pytest.raises(InvalidInput, match="generator: expected one of diffusionrig, next3d, warp, got stylegan"):
        build_generator("stylegan", np.zeros((8, 8, 3), np.uint8), None, None)


def test_warp_checks_its_source():
    with pytest.raises(InvalidInput, match="params"):
        build_generator("warp", np.zeros((8, 8, 3), np.uint8), None, None)
    with pytest.raises(InvalidInput, match="image"):
        build_generator("Warp", np.zeros((8, 8), np.uint8), None, None)


def test_unknown_option_is_invalid_input(astronaut):
    from facerig.edit import _fit_one
    from facerig.morphable import load_face_model

    model = load_face_model("builtin")
    params = _fit_one(astronaut, model, "largest", "astronaut")
    with pytest.raises(InvalidInput, match="warp generator options"):
        build_generator("warp", astronaut, params, model, colour="blue")
