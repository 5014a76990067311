"""EditSession: one fit and one engine preparation for many edits (the web UI's slider path)."""

from __future__ import annotations

import numpy as np
import pytest

import facerig.edit as fedit
from facerig.engines.warp import WarpEngine
from facerig.errors import InvalidInput


@pytest.fixture
def counted(count_calls):
    calls = count_calls(fedit, "_fit_landmarks", key="fit")
    return count_calls(WarpEngine, "prepare", calls, key="prepare")


def test_session_fits_and_prepares_once_and_matches_edit(astronaut, counted):
    s = fedit.EditSession(astronaut)
    a = s.edit(controls={"smile": 0.6})
    b = s.edit(preset="surprised", intensity=0.7)
    c = s.edit(controls={"smile": 0.6})
    assert counted == {"fit": 1, "prepare": 1}
    assert np.array_equal(a.image, c.image) and not np.array_equal(a.image, b.image)
    assert a.image.shape == astronaut.shape and "fit" not in a.timings and a.timings["engine"] > 0
    ref = fedit.edit(astronaut, controls={"smile": 0.6}, params=s.params, buffers=False)
    assert np.array_equal(ref.image, a.image)  # the same picture as the one-shot API


def test_session_reference_is_fitted_once_and_errors_are_typed(astronaut, grace_hopper, counted):
    s = fedit.EditSession(astronaut)
    r1 = s.edit(take="expression", reference=grace_hopper)
    s.edit(take="expression", reference=grace_hopper)
    assert counted["fit"] == 2  # the photo and the reference, once each
    assert r1.params_after.expression.ne(s.params.expression).any()
    with pytest.raises(InvalidInput, match="reference"):
        s.edit(take="pose")
    with pytest.raises(InvalidInput, match="take"):
        s.edit(reference=grace_hopper, smile=0.3)
    with pytest.raises(InvalidInput, match="at least one change"):
        s.edit(controls={"blink": 0.0})
    with pytest.raises(InvalidInput, match="yaw"):
        s.edit(yaw=40)
    assert counted["prepare"] == 1
