"""facerig."""
__version__ = "0.1.0"


def __getattr__(name: str):  # lazy: `import facerig` stays light (no torch)
    if name in ("edit", "reenact", "EditResult", "ReenactResult"):
        import importlib

        return getattr(importlib.import_module("facerig.edit"), name)
    raise AttributeError(f"module 'facerig' has no attribute {name!r}")
