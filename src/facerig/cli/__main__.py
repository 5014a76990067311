from facerig.cli import _entry

_entry()
