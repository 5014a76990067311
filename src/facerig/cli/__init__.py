"""The ``facerig`` command line. Heavy modules are imported inside the commands so that
``facerig --help`` starts fast; every FacerigError becomes one line on stderr and an exit code."""

from __future__ import annotations

import logging
import os
import sys

import typer

from facerig.cli.app import app


def main(argv: list[str] | None = None) -> int:
    from facerig.errors import FacerigError
    from facerig.io.lazy_imports import install

    install()  # mediapipe's matplotlib-based drawing helpers load only if used (0.8 s per edit)
    debug = os.environ.get("FACERIG_DEBUG") == "1"
    if not debug:
        _silence_native_stderr()
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        app(args=argv, standalone_mode=False)
        return 0
    except FacerigError as e:
        print(f"facerig: error: {e}", file=sys.stderr)
        return e.exit_code
    except typer.Exit as e:
        return int(e.exit_code or 0)
    except typer.Abort:
        print("facerig: aborted", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("facerig: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # click usage errors and anything unexpected: one line, no traceback
        if isinstance(e, _click_exceptions("UsageError")):
            print(f"facerig: usage error: {e.format_message()}", file=sys.stderr)  # type: ignore[attr-defined]
            return 2
        if isinstance(e, _click_exceptions("ClickException")):
            print(f"facerig: error: {e.format_message()}", file=sys.stderr)  # type: ignore[attr-defined]
            return int(getattr(e, "exit_code", 1))
        if isinstance(e, ImportError):
            from facerig.errors import MissingDependency

            typed = MissingDependency.from_import_error(e, "this command")
            if typed is not None:
                print(f"facerig: error: {typed}", file=sys.stderr)
                return typed.exit_code
        if debug:
            raise
        print(f"facerig: internal error: {type(e).__name__}: {e} (set FACERIG_DEBUG=1 for a traceback)",
              file=sys.stderr)
        return 1


def _click_exceptions(name: str) -> tuple[type, ...]:
    """The click exception class ``name`` from click itself and from the copy of click that newer
    typer releases vendor (``typer._click``): typer raises the latter, which is not a subclass of the
    former, so checking click's class alone turned every usage error into an "internal error"."""
    import importlib

    found: list[type] = []
    for mod in ("click.exceptions", "typer._click.exceptions"):
        try:
            cls = getattr(importlib.import_module(mod), name, None)
        except ImportError:
            continue
        if isinstance(cls, type):
            found.append(cls)
    return tuple(found)


def _silence_native_stderr() -> None:
    """Native libraries (MediaPipe's TFLite/absl) log banners to file descriptor 2, some of them from
    worker threads at any time. Python's own stderr moves to a duplicate of the terminal's stderr and
    descriptor 2 goes to /dev/null, so the CLI's messages stay exactly one line. FACERIG_DEBUG=1 keeps
    everything."""
    err = sys.stderr
    if getattr(_silence_native_stderr, "done", False) or err is not sys.__stderr__:
        return  # already done, or stderr is redirected by the caller (tests, embedding programs)
    if err is None:
        return  # stderr closed (2>&-)
    try:
        err.flush()
        keep = os.dup(2)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        os.close(devnull)
        sys.stderr = os.fdopen(keep, "w", buffering=1, encoding="utf-8", errors="replace")
    except (OSError, ValueError):
        return
    _silence_native_stderr.done = True  # type: ignore[attr-defined]


def _entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    _entry()
