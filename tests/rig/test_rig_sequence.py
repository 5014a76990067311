"""Structured face alignment for reenactment and temporal smoothing."""

from __future__ import annotations

import pytest
import torch

from facerig.errors import InvalidInput
from facerig.rig import align_sequence, anchor_ndc, apply_preset, set_expression, smooth_sequence
from facerig.rotations import axis_angle_to_matrix, rotation_angle_deg, ypr_to_axis_angle
from facerig.types import FaceParams


def _driving(model, make, t=6):
    d = make(b=t, seed=11)
    ypr = torch.stack([torch.linspace(-10, 20, t), torch.linspace(0, 8, t), torch.zeros(t)], -1)
    exp = torch.zeros(t, model.n_expression)
    exp[:, model.expression_names.index("jawOpen")] = torch.linspace(0.1, 0.8, t)
    return d.replace(rotation=ypr_to_axis_angle(ypr), expression=exp,
                     camera=d.camera + torch.linspace(0, 1, t)[:, None] * torch.tensor([0.02, 1.0, 0.5]))


def test_align_absolute(model, make):
    src = apply_preset(make(seed=10), "smile", model=model)
    src = src.replace(light=src.light * 0.7)
    drv = _driving(model, make)
    out = align_sequence(src, drv, model, motion="absolute")
    assert out.meta["aligned"]["motion"] == "absolute" and out.meta["aligned"]["ref_frame"] is None
    assert out.batch_size == drv.batch_size
    assert torch.equal(out.identity, src.identity.expand(6, -1))
    assert torch.equal(out.light, src.light.expand(6, -1, -1))
    assert torch.equal(out.expression, drv.expression)
    assert torch.allclose(out.rotation, drv.rotation)
    assert torch.allclose(out.camera[:, 0], src.camera[:, 0].expand(6))  # the source's scale
    # the source's anchor stays where it was in every frame (the driving's translation is not used)
    a_src = anchor_ndc(src, model).float()
    # anchors are taken on the source's expression: check with it
    check = out.replace(expression=src.expression.expand(6, -1))
    assert torch.allclose(anchor_ndc(check, model).float(), a_src.expand(6, -1), atol=1e-5)


def test_align_relative(model, make):
    # without the mouth rule: plain deltas everywhere
    src = set_expression(make(seed=10), {"mouthSmile": 0.3, "jawOpen": 0.4}, model)
    src = src.replace(rotation=ypr_to_axis_angle(torch.tensor([[5.0, -3.0, 2.0]])))
    drv = _driving(model, make)
    ref = 2
    out = align_sequence(src, drv, model, motion="relative", ref_frame=ref, follow_mouth=False)
    assert out.meta["aligned"]["ref_frame"] == ref and out.meta["aligned"]["mouth_follow"] is False
    # the reference frame reproduces the source exactly
    assert torch.allclose(out.rotation[ref], src.rotation[0], atol=1e-6)
    assert torch.allclose(out.expression[ref], src.expression[0], atol=1e-6)
    # motion deltas against the reference frame are the driving's
    r_out, r_drv = axis_angle_to_matrix(out.rotation.double()), axis_angle_to_matrix(drv.rotation.double())
    d_out = r_out @ r_out[ref:ref + 1].transpose(-1, -2)
    d_drv = r_drv @ r_drv[ref:ref + 1].transpose(-1, -2)
    assert float(rotation_angle_deg(d_out, d_drv).max()) < 1e-3
    j = model.expression_names.index("jawOpen")
    assert torch.allclose(out.expression[:, j] - out.expression[ref, j], drv.expression[:, j] - drv.expression[ref, j])
    assert torch.allclose(out.expression[:, model.expression_names.index("mouthSmile_L")], torch.tensor(0.3))
    # with it (the default), a source opening wider (0.95) than the driver's reach (~0.77) moves by
    # the driver's deltas too; one within the driver's range (0.4) takes the driver's own opening
    wide = set_expression(src, {"jawOpen": 0.95}, model)
    fm = align_sequence(wide, drv, model, motion="relative", ref_frame=ref)
    assert fm.meta["aligned"]["mouth_follow"] is True
    assert torch.allclose(fm.expression[:, j] - fm.expression[ref, j], drv.expression[:, j] - drv.expression[ref, j],
                          atol=1e-5)
    assert torch.allclose(align_sequence(src, drv, model, ref_frame=ref).expression[:, j], drv.expression[:, j],
                          atol=1e-5)
    # the older boolean spelling still works; the default reference is the most neutral frame: frame 1
    # (yaw -4, jawOpen 0.24) beats frame 0 (yaw -10, jawOpen 0.1)
    old = align_sequence(src, drv, model, relative=True)
    assert old.meta["aligned"]["motion"] == "relative" and old.meta["aligned"]["ref_frame"] == 1
    assert align_sequence(src, drv, model, relative=False).meta["aligned"]["motion"] == "absolute"


def _talking(model, make, t=24):
    """A driver that starts mid-sentence: jawOpen 0.6 at frame 0, closes (0.03) at frame 9, talks on."""
    d = make(b=t, seed=11)
    k = torch.arange(t, dtype=torch.float64)
    jaw = (0.315 + 0.285 * torch.cos(2 * torch.pi * k / 18)).float()
    exp = torch.zeros(t, model.n_expression)
    names = model.expression_names
    exp[:, names.index("jawOpen")] = jaw
    exp[:, names.index("mouthLowerDown_L")] = 0.5 * jaw
    exp[:, names.index("browInnerUp")] = 0.2
    return d.replace(expression=exp), jaw


def test_neutral_frame_is_the_most_neutral(model, make):
    from facerig.rig.sequence import neutral_frame

    t = 7
    d = make(b=t, seed=3)
    names = model.expression_names
    exp = torch.zeros(t, model.n_expression)
    exp[:, names.index("jawOpen")] = torch.tensor([0.6, 0.4, 0.0, 0.05, 0.3, 0.0, 0.5])
    exp[2, names.index("mouthSmile_L")] = 0.8           # mouth closed but smiling
    exp[3, names.index("eyeLookUp_L")] = 0.9            # gaze does not count against neutrality
    yaw = torch.tensor([0.0, 0, 0, 0, 0, 30, 0])        # frame 5: no expression but turned 30 degrees
    d = d.replace(expression=exp, rotation=ypr_to_axis_angle(torch.stack([yaw, torch.zeros(t), torch.zeros(t)], -1)))
    assert neutral_frame(d, model) == 3
    out = align_sequence(make(seed=10), d, model)        # relative is the default; the reference chosen
    assert out.meta["aligned"]["motion"] == "relative" and out.meta["aligned"]["ref_frame"] == 3


def test_mouth_follows_a_driver_that_starts_mid_sentence(model, make):
    src = make(seed=10)                                  # a closed (neutral) mouth
    drv, jaw = _talking(model, make)
    j = model.expression_names.index("jawOpen")
    drv_range = float(jaw.max() - jaw.min())
    out = align_sequence(src, drv, model)
    assert out.meta["aligned"]["ref_frame"] == 9 and out.meta["aligned"]["mouth_follow"] is True
    got = out.expression[:, j]
    assert float(got.max() - got.min()) == pytest.approx(drv_range, rel=1e-4)
    assert torch.allclose(got, jaw, atol=1e-5)           # the driver's own opening
    assert float(torch.corrcoef(torch.stack([got, jaw]))[0, 1]) > 0.999
    # plain deltas against the neutral frame keep the range too (only the 0.03 offset is lost)
    nd = align_sequence(src, drv, model, follow_mouth=False)
    assert float(nd.expression[:, j].max() - nd.expression[:, j].min()) > 0.9 * drv_range
    # the behaviour before issue 10 (deltas against the FIRST frame, clamped) leaves the mouth almost shut
    first = align_sequence(src, drv, model, ref_frame=0, follow_mouth=False)
    assert float(first.expression[:, j].max() - first.expression[:, j].min()) < 0.1 * drv_range
    # the brows move by their delta (0 here) in both: the rule is only for the mouth opening
    b = model.expression_names.index("browInnerUp")
    assert torch.allclose(out.expression[:, b], src.expression[:, b].expand(drv.batch_size))


def test_a_source_with_parted_lips_keeps_them(model, make):
    """Mouth rule = the driver's absolute opening + what the source opens beyond the driver's reach."""
    drv, jaw = _talking(model, make)
    names = model.expression_names
    j, up, lo = names.index("jawOpen"), names.index("mouthUpperUp_L"), names.index("mouthLowerDown_L")
    src = set_expression(make(seed=10), {"mouthUpperUp_L": 0.2, "jawOpen": 0.02}, model)   # a smile with teeth
    out = align_sequence(src, drv, model)
    ref = out.meta["aligned"]["ref_frame"]
    assert ref == 9
    # teeth kept: the driver never raises the upper lip (0), so the source's 0.2 stays at every frame
    assert torch.allclose(out.expression[:, up], torch.tensor(0.2))
    # jawOpen 0.02 is below the driver's reach: the driver's own opening
    assert torch.allclose(out.expression[:, j], jaw, atol=1e-5)
    # a source opening wider (0.9) than the driver ever does (reach ~0.6) keeps the excess on top
    reach = float(torch.quantile(jaw.double(), 0.95))
    wide = align_sequence(set_expression(make(seed=10), {"jawOpen": 0.9}, model), drv, model)
    assert torch.allclose(wide.expression[:, j], (jaw + 0.9 - reach).clamp(0, 1), atol=1e-5)
    assert float(wide.expression[:, j].min()) > 0.25                      # never closes: it is wider than the driver
    assert float(wide.expression[:, lo].min()) >= 0


def test_a_source_photographed_mid_speech_follows_the_driver(model, make):
    """Self-reenactment property: a source whose mouth is as open as some driving frame (a clip's own
    open first frame) must close and open with the driver, not keep its opening as an offset over the
    closed reference frame (the W009 failure: the output never closed, mouth r 0.51)."""
    drv, jaw = _talking(model, make)
    j, lo = model.expression_names.index("jawOpen"), model.expression_names.index("mouthLowerDown_L")
    src = drv[[0]].replace(identity=make(seed=10).identity)        # the driver's own first frame: open (0.6)
    assert float(src.expression[0, j]) > 0.5
    out = align_sequence(src, drv, model)
    assert out.meta["aligned"]["ref_frame"] == 9                     # the reference is still the closed frame
    # ... yet the opening is the driver's (within the 95th-percentile reach: 0.6 is the driver's peak)
    assert torch.allclose(out.expression[:, j], jaw, atol=5e-3)
    assert torch.allclose(out.expression[:, lo], 0.5 * jaw, atol=5e-3)
    assert float(out.expression[:, j].min()) < 0.05                  # it closes
    # the old rule (excess over the reference frame) would have kept 0.57 on top: never below 0.6
    old = (src.expression[0, j] + jaw - jaw[9]).clamp(0, 1)
    assert float(old.min()) > 0.5


@pytest.mark.parametrize("kw, needle", [
    ({"motion": "sideways"}, "motion"),
    ({"motion": 3}, "motion"),
    ({"ref_frame": -1}, "ref_frame"),
    ({"ref_frame": 6}, "ref_frame"),
    ({"ref_frame": 1.5}, "ref_frame"),
    ({"ref_frame": True}, "ref_frame"),
    ({"motion": "absolute", "ref_frame": 1}, "ref_frame"),
])
def test_align_motion_validation(model, make, kw, needle):
    with pytest.raises(InvalidInput, match=needle) as e:
        align_sequence(make(seed=10), _driving(model, make), model, **kw)
    assert e.value.name == needle


def test_align_validation(model, make):
    with pytest.raises(InvalidInput, match="source"):
        align_sequence(make(b=2), make(b=3), model)
    other = make(b=3)
    other = FaceParams(**{**other.__dict__, "expression": other.expression[:, :10],
                          "expression_names": other.expression_names[:10]})
    with pytest.raises(InvalidInput, match="driving"):
        align_sequence(make(), other, model)


def test_smooth_sequence(model, make):
    t = 40
    g = torch.Generator().manual_seed(0)
    d = make(b=t)
    yaw = torch.linspace(-20, 20, t) + 3 * torch.randn(t, generator=g)
    rot = ypr_to_axis_angle(torch.stack([yaw, torch.zeros(t), torch.zeros(t)], -1))
    exp = (0.5 + 0.4 * torch.randn(t, model.n_expression, generator=g)).clamp(0, 1)
    noisy = d.replace(rotation=rot, expression=exp, camera=d.camera + 0.01 * torch.randn(t, 3, generator=g))
    s = smooth_sequence(noisy, 2.0)
    assert s.batch_size == t
    assert s.expression.min() >= 0 and s.expression.max() <= 1
    # jitter goes down: second differences of yaw and expression shrink
    from facerig.rig import get_pose

    def rough(x):
        return float((x[2:] - 2 * x[1:-1] + x[:-2]).abs().mean())

    assert rough(get_pose(s)[:, 0]) < 0.3 * rough(get_pose(noisy)[:, 0])
    assert rough(s.expression) < 0.3 * rough(noisy.expression)
    assert rough(s.camera) < 0.3 * rough(noisy.camera)
    # a constant / linear-in-angle rotation is preserved (zero phase: no lag)
    lin = d.replace(rotation=ypr_to_axis_angle(torch.stack([torch.linspace(-20, 20, t), torch.zeros(t),
                                                            torch.zeros(t)], -1)))
    ls = smooth_sequence(lin, 2.0)
    mid = slice(8, t - 8)
    assert torch.allclose(get_pose(ls)[mid, 0], get_pose(lin)[mid, 0], atol=0.05)
    assert torch.equal(smooth_sequence(noisy, 0).expression, noisy.expression)
    with pytest.raises(InvalidInput, match="sigma_frames"):
        smooth_sequence(noisy, -1)
