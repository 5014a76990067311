"""The training-free warp engine (default). See :mod:`facerig.engines.warp.engine`."""

from facerig.engines.warp.engine import WarpEngine, WarpOptions

__all__ = ["WarpEngine", "WarpOptions"]
