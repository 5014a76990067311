"""Named expression presets: ARKit blendshape recipes designed from FACS action units.

Each recipe maps ARKit blendshape names (subject's ``_L``/``_R``, as in ``docs/conventions.md``) to
weights in [0, 1]; ``apply_preset`` multiplies the recipe by an intensity. The recipes use only the
52 standard ARKit names, so they work for every blendshape model with ARKit names (builtin, ict).
FLAME (unbounded PCA expression) has no ARKit names: presets raise :class:`InvalidInput` for it.

Design notes (FACS action units -> ARKit shapes):

* AU1 inner brow raiser -> browInnerUp; AU2 outer brow raiser -> browOuterUp_L/R;
  AU4 brow lowerer -> browDown_L/R; AU5 upper lid raiser -> eyeWide_L/R;
  AU6 cheek raiser -> cheekSquint_L/R; AU7 lid tightener -> eyeSquint_L/R;
  AU9 nose wrinkler -> noseSneer_L/R; AU10 upper lip raiser -> mouthUpperUp_L/R;
  AU12 lip corner puller -> mouthSmile_L/R; AU14 dimpler -> mouthDimple_L/R;
  AU15 lip corner depressor -> mouthFrown_L/R; AU17 chin raiser -> mouthShrugLower;
  AU18 lip pucker -> mouthPucker; AU20 lip stretcher -> mouthStretch_L/R;
  AU22 lip funneler -> mouthFunnel; AU24 lip pressor -> mouthPress_L/R;
  AU25/26/27 lips part / jaw drop / mouth stretch -> jawOpen (+ mouthLowerDown);
  AU43/45 eyes closed / blink -> eyeBlink_L/R.
* Prototypes (Ekman & Friesen's EMFACS): happiness 6+12; sadness 1+4+15(+17); surprise 1+2+5+26;
  fear 1+2+4+5+7+20+26; anger 4+5/7+23/24(+9, 17); disgust 9+10(+15, 17).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from facerig.errors import InvalidInput


def _both(name: str, value: float) -> dict[str, float]:
    return {f"{name}_L": value, f"{name}_R": value}


def _recipe(*parts: Mapping[str, float]) -> MappingProxyType:
    out: dict[str, float] = {}
    for p in parts:
        out.update(p)
    return MappingProxyType(out)


#: preset name -> ARKit blendshape recipe (weights at intensity 1)
PRESETS: MappingProxyType = MappingProxyType({
    "neutral": _recipe(),
    # AU6 + AU12 (Duchenne smile): corners up and out, cheeks raised, lids narrowed by the cheeks
    # (a strong smile also parts the lips: see STRONG)
    "smile": _recipe(_both("mouthSmile", 0.9), _both("cheekSquint", 0.7), _both("eyeSquint", 0.3),
                     _both("mouthDimple", 0.15), _both("mouthStretch", 0.1)),
    # AU4 + AU7 + AU9 + AU24 + AU15 + AU17: lowered, drawn-together brows, tight lids, pressed lips
    # (in ICT-derived shapes noseSneer also lifts the lip corners: kept low, offset by mouthFrown)
    "angry": _recipe(_both("browDown", 0.9), _both("eyeSquint", 0.4), _both("noseSneer", 0.2),
                     _both("mouthPress", 0.5), _both("mouthFrown", 0.5), {"mouthShrugLower": 0.2}),
    # AU1 + AU4 + AU15 + AU17: oblique brows (inner corners up), corners down, chin raised
    "sad": _recipe({"browInnerUp": 0.8}, _both("browDown", 0.3), _both("mouthFrown", 0.8),
                   {"mouthShrugLower": 0.4}, _both("mouthPress", 0.15), _both("eyeSquint", 0.15),
                   _both("mouthLowerDown", 0.1)),
    # AU1 + AU2 + AU5 + AU26: brows up, eyes wide, jaw dropped
    "surprised": _recipe({"browInnerUp": 0.9}, _both("browOuterUp", 0.9), _both("eyeWide", 0.7),
                         {"jawOpen": 0.45, "mouthFunnel": 0.15}),
    # AU1 + AU2 + AU4 + AU5 + AU20 + AU26: raised but drawn brows, wide eyes, stretched lips
    "fear": _recipe({"browInnerUp": 0.8}, _both("browOuterUp", 0.4), _both("browDown", 0.3),
                    _both("eyeWide", 0.8), _both("mouthStretch", 0.6), {"jawOpen": 0.2},
                    _both("mouthLowerDown", 0.2)),
    # AU9 + AU10 + AU4 + AU15 + AU17: wrinkled nose, raised upper lip
    "disgust": _recipe(_both("noseSneer", 0.7), _both("mouthUpperUp", 0.4), _both("browDown", 0.35),
                       _both("cheekSquint", 0.3), _both("eyeSquint", 0.3), _both("mouthFrown", 0.6),
                       {"mouthShrugLower": 0.2}),
    # AU43: both eyes closed
    "close_eyes": _recipe(_both("eyeBlink", 1.0)),
    # AU1 + AU2 (+ a little AU5)
    "raise_brows": _recipe({"browInnerUp": 1.0}, _both("browOuterUp", 1.0), _both("eyeWide", 0.15)),
    # AU4 (+ AU7): furrowed brows
    "frown_brows": _recipe(_both("browDown", 1.0), _both("eyeSquint", 0.2), _both("noseSneer", 0.1)),
    # AU25 + AU26/27: jaw drop with the lower lip following
    "open_mouth": _recipe({"jawOpen": 0.7}, _both("mouthLowerDown", 0.2)),
    # AU18 (+ AU22): pursed lips
    "pucker": _recipe({"mouthPucker": 0.9, "mouthFunnel": 0.15}),
    # AU46 on the subject's LEFT eye (appears on the image's right) with a one-sided cheek raise
    "wink_left": _recipe({"eyeBlink_L": 0.9, "cheekSquint_L": 0.25, "mouthSmile_L": 0.25}),
    # AU46 on the subject's RIGHT eye (appears on the image's left)
    "wink_right": _recipe({"eyeBlink_R": 0.9, "cheekSquint_R": 0.25, "mouthSmile_R": 0.25}),
    # AU7 + AU6 (+ AU4): narrowed eyes
    "squint": _recipe(_both("eyeSquint", 0.8), _both("cheekSquint", 0.3), _both("browDown", 0.2)),
    # unilateral AU12 + AU14 on the subject's left side
    "smirk": _recipe({"mouthSmile_L": 0.6, "mouthDimple_L": 0.3, "cheekSquint_L": 0.2}),
    # visemes (mouth shapes of speech): "aaa" open and relaxed, "eee" spread, "ooo" rounded
    "aaa": _recipe({"jawOpen": 0.6}, _both("mouthLowerDown", 0.35), _both("mouthUpperUp", 0.2)),
    "eee": _recipe(_both("mouthStretch", 0.6), _both("mouthSmile", 0.35), {"jawOpen": 0.15},
                   _both("mouthUpperUp", 0.25), _both("mouthLowerDown", 0.25)),
    "ooo": _recipe({"mouthFunnel": 0.75, "mouthPucker": 0.5, "jawOpen": 0.2}),
    # gaze (AU61-64 eyes turn): sides are the subject's, like wink_left (look_left: towards the image's right)
    "look_left": _recipe({"eyeLookOut_L": 0.8, "eyeLookIn_R": 0.8}),
    "look_right": _recipe({"eyeLookIn_L": 0.8, "eyeLookOut_R": 0.8}),
    "look_up": _recipe(_both("eyeLookUp", 0.8), _both("eyeWide", 0.1)),
    "look_down": _recipe(_both("eyeLookDown", 0.8)),
})

#: shapes added only to a strong preset, with weight clip((intensity - 0.5) / 0.5, 0, 1): a strong
#: smile parts the lips (upper lip raised over the teeth, lower lip down, the jaw a little open),
#: a mild one does not
STRONG: MappingProxyType = MappingProxyType({
    "smile": _recipe(_both("mouthUpperUp", 0.35), _both("mouthLowerDown", 0.3), {"jawOpen": 0.12}),
})

#: presets that keep the source's own mouth opening (jawOpen, jaw pose, lips apart) when it is larger
#: than theirs: a smile on a photo that talks or laughs with an open mouth stays open (closing it drew
#: a squeezed grimace)
KEEP_OPENING: frozenset[str] = frozenset({"smile", "smirk", "wink_left", "wink_right"})
OPENING_SHAPES: tuple[str, ...] = ("jawOpen", "mouthLowerDown_L", "mouthLowerDown_R", "mouthUpperUp_L",
                                   "mouthUpperUp_R")

#: a preset may drive these shapes beyond the model's upper bound, by this factor: the brow shapes of
#: the ARKit-named models move the brows by only ~3.4 % (raise) / 1.5 % (lower) of the eye distance
#: per unit, far less than a real brow raise (12-15 %), and a re-detected face showed ~60 % of the
#: mesh's motion: "raise_brows" lifted the detected brows by 4-8 % of the eye distance. Presets scale
#: these shapes' recipe weights by it (recipes stay in [0, 1] = fraction of the preset's full motion)
HEADROOM: MappingProxyType = MappingProxyType({
    "browInnerUp": 1.6, "browOuterUp_L": 1.6, "browOuterUp_R": 1.6, "browDown_L": 1.6, "browDown_R": 1.6,
})

#: one-line descriptions (docs, CLI help)
DESCRIPTIONS: MappingProxyType = MappingProxyType({
    "neutral": "relaxed face (all blendshapes zero)",
    "smile": "Duchenne smile: lip corners up and out, cheeks raised, lips parted when strong (AU6+12+25)",
    "angry": "lowered brows, tight lids, pressed lips (AU4+7+9+24+15+17)",
    "sad": "inner brows up, lip corners down, chin raised (AU1+4+15+17)",
    "surprised": "brows up, eyes wide, jaw dropped (AU1+2+5+26)",
    "fear": "raised, drawn brows, wide eyes, stretched lips (AU1+2+4+5+20+26)",
    "disgust": "wrinkled nose, raised upper lip (AU9+10+4+15+17)",
    "close_eyes": "both eyes closed (AU43)",
    "raise_brows": "brows raised (AU1+2)",
    "frown_brows": "furrowed brows (AU4+7)",
    "open_mouth": "jaw dropped, lips apart (AU25+26)",
    "pucker": "pursed lips, as for a kiss (AU18+22)",
    "wink_left": "subject's left eye closed (image right)",
    "wink_right": "subject's right eye closed (image left)",
    "squint": "narrowed eyes (AU6+7)",
    "smirk": "one-sided smile on the subject's left (image right)",
    "aaa": "viseme 'aaa': mouth open wide and relaxed",
    "eee": "viseme 'eee': lips spread, teeth showing",
    "ooo": "viseme 'ooo': lips rounded and pushed forward",
    "look_left": "eyes look to the subject's left (the image's right)",
    "look_right": "eyes look to the subject's right (the image's left)",
    "look_up": "eyes look up",
    "look_down": "eyes look down",
})

PRESET_NAMES: tuple[str, ...] = tuple(PRESETS)


def preset_recipe(name: str) -> dict[str, float]:
    """The recipe of a preset (a copy). Unknown names raise InvalidInput with suggestions."""
    key = str(name).strip().lower().replace("-", "_").replace(" ", "_")
    if key not in PRESETS:
        import difflib

        close = difflib.get_close_matches(key, PRESET_NAMES, n=3, cutoff=0.5)
        raise InvalidInput("preset", f"one of {', '.join(PRESET_NAMES)}", name,
                           hint=f"did you mean {' or '.join(close)}?" if close else None)
    return dict(PRESETS[key])


def canonical_preset_name(name: str) -> str:
    key = str(name).strip().lower().replace("-", "_").replace(" ", "_")
    preset_recipe(key)
    return key


def strong_recipe(name: str) -> dict[str, float]:
    """The shapes a preset adds when strong (see :data:`STRONG`; empty for most presets)."""
    return dict(STRONG.get(canonical_preset_name(name), {}))


__all__ = ["PRESETS", "PRESET_NAMES", "DESCRIPTIONS", "STRONG", "KEEP_OPENING", "OPENING_SHAPES", "HEADROOM",
           "preset_recipe", "strong_recipe", "canonical_preset_name"]
