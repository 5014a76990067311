"""The video extensions of facerig.engines.sd.reference (frames, per-row drop, rounding): defaults keep
the old behaviour, bad shapes are refused naming the state or the flags."""

from __future__ import annotations

import pytest
import torch

from facerig.engines.sd.reference import ReferenceBank
from facerig.errors import InvalidInput


def test_defaults_keep_the_image_behaviour():
    bank = ReferenceBank(1)
    s = torch.randn(1, 5, 8, dtype=torch.float64)
    bank.set([s])
    assert bank.frames == 1 and bank.round_to is None and bank.drop_rows(4) is None
    torch.testing.assert_close(bank.get(0, torch.zeros(3, 7, 8, dtype=torch.float64)), s.expand(3, -1, -1))
    with pytest.raises(InvalidInput, match=r"reference state 0: expected batch 1 or 3"):
        bank.set([torch.randn(2, 5, 8)])
        bank.get(0, torch.zeros(3, 7, 8))


def test_frames_repeat_batch_major_and_rounding():
    bank = ReferenceBank(1)
    s = torch.randn(2, 5, 8, dtype=torch.float64)
    bank.set([s])
    bank.frames = 3
    got = bank.get(0, torch.zeros(6, 7, 8, dtype=torch.float64))
    assert torch.equal(got[:3], s[:1].expand(3, -1, -1)) and torch.equal(got[3:], s[1:].expand(3, -1, -1))
    with pytest.raises(InvalidInput, match=r"x 3 frames"):
        bank.get(0, torch.zeros(4, 7, 8))
    bank.round_to = torch.float16
    assert torch.equal(bank.get(0, torch.zeros(6, 7, 8, dtype=torch.float64))[0], s[0].half().double())


def test_drop_flags_repeat_over_frames():
    bank = ReferenceBank(1)
    bank.frames = 2
    bank.set_drop([True, False])
    assert bank.drop_rows(4).tolist() == [True, True, False, False]
    assert bank.drop_rows(2).tolist() == [True, False]
    with pytest.raises(InvalidInput, match="^drop"):
        bank.drop_rows(6)
    bank.set_drop(None)
    assert bank.drop_rows(6) is None
