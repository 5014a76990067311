"""The web UI (``facerig serve``): a gradio app over :mod:`facerig.ui.core`. Importing this package
does not import gradio; :func:`build_app` / :func:`serve` do (``pip install 'facerig[ui]'``)."""

from __future__ import annotations

from typing import Any

__all__ = ["build_app", "serve"]


def build_app(*args: Any, **kwargs: Any) -> Any:
    from facerig.ui.app import build_app as _build

    return _build(*args, **kwargs)


def serve(*args: Any, **kwargs: Any) -> Any:
    from facerig.ui.app import serve as _serve

    return _serve(*args, **kwargs)
