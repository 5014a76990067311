"""Latency of the `facerig` command line as a user meets it (each run is a fresh process).

Prints: `facerig --help` wall time and its import time; one `facerig edit` without the fit cache
(first edit of a photo), the same edit with the cached fit, N edits of one photo in one call (repeated
--preset), and the import time of a plain (cached) edit (``-X importtime``: the cumulative time of the
top-level imports). Uses the public-domain Grace Hopper photo (matplotlib) unless --photo is given.

    python benchmarks/bench_cli.py [--photo PATH] [--repeat 2] [--n 4]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _run(args: list[str], env: dict[str, str], importtime: bool = False) -> tuple[float, float | None]:
    cmd = [sys.executable] + (["-X", "importtime"] if importtime else []) + ["-m", "facerig.cli", *args]
    if importtime:  # the CLI sends native stderr to /dev/null unless FACERIG_DEBUG=1; keep the report
        env = dict(env, FACERIG_DEBUG="1")
    t = time.perf_counter()
    p = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if p.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed ({p.returncode}): {p.stderr.strip()[-500:]}")
    imp = None
    if importtime:
        top = [int(m.group(1)) for m in re.finditer(r"import time:\s+\d+ \|\s+(\d+) \| (\S+)", p.stderr)
               if not m.group(0).split("|")[-1].startswith("  ")]
        imp = sum(top) / 1e6
    return wall, imp


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--photo", default=None)
    ap.add_argument("--repeat", type=int, default=2, help="runs per figure (the best is printed)")
    ap.add_argument("--n", type=int, default=4, help="edits in the multi-edit call")
    a = ap.parse_args()
    if a.photo is None:
        import matplotlib

        a.photo = str(Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg")
    src = str(Path(__file__).resolve().parents[1] / "src")
    presets = ["smile", "surprised", "sad", "raise_brows", "angry", "open_mouth", "close_eyes", "squint"][: a.n]
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, PYTHONPATH=src + os.pathsep + os.environ.get("PYTHONPATH", ""),
                   FACERIG_CACHE=str(Path(tmp) / "cache"))
        out = str(Path(tmp) / "o.png")
        rows = []
        best = min(_run(["--help"], env, importtime=True) for _ in range(a.repeat))
        rows.append(("facerig --help", best[0], best[1]))
        first = min(_run(["edit", a.photo, "--preset", "smile", "--no-cache", "-o", out], env)[0]
                    for _ in range(a.repeat))
        rows.append(("edit, no cache (first edit of a photo)", first, None))
        _run(["edit", a.photo, "--preset", "smile", "-o", out], env)  # fills the cache
        cached = min(_run(["edit", a.photo, "--preset", "smile", "-o", out], env, importtime=True)
                     for _ in range(a.repeat))
        rows.append(("edit, cached fit", cached[0], cached[1]))
        many = [x for p in presets for x in ("--preset", p)]
        multi = min(_run(["edit", a.photo, *many, "-o", str(Path(tmp) / "m_{name}.png")], env)[0]
                    for _ in range(a.repeat))
        rows.append((f"{len(presets)} edits in one call, cached fit", multi, None))
    print(f"photo: {a.photo}; best of {a.repeat}; python {sys.version.split()[0]}, {os.cpu_count()} cpus")
    print(f"{'what':<44} {'wall s':>7} {'imports s':>10}")
    for name, wall, imp in rows:
        print(f"{name:<44} {wall:7.2f} {'' if imp is None else f'{imp:10.2f}':>10}")
    print(f"per edit in the multi-edit call: {rows[-1][1] / len(presets):.2f} s")


if __name__ == "__main__":
    main()
