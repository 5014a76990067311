"""Public-domain portraits shipped by installed packages, for demos and tests."""

from __future__ import annotations

from pathlib import Path

from facerig.errors import InvalidInput

SAMPLES = {
    "astronaut": "scikit-image: NASA portrait of Eileen Collins (public domain)",
    "grace_hopper": "matplotlib sample data: Grace Hopper (public domain, US Navy)",
}


def sample_path(name: str) -> Path:
    """Path of a bundled sample portrait."""
    if name == "astronaut":
        import skimage

        p = Path(skimage.__file__).parent / "data" / "astronaut.png"
    elif name == "grace_hopper":
        import matplotlib

        p = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    else:
        raise InvalidInput("demo", f"one of {', '.join(SAMPLES)}", name)
    if not p.is_file():
        raise InvalidInput("demo", f"the sample file of {name}", str(p), hint="reinstall scikit-image/matplotlib")
    return p
