"""Small helpers of DataJoint 2.x's ``datajoint.utils``: name conversion, a yes/no prompt, and
file writes that never leave a half-written file behind."""

from __future__ import annotations

import os
import re
import shutil
import uuid
from pathlib import Path

from .table import from_camel_case, to_camel_case

__all__ = ["user_choice", "is_camel_case", "to_camel_case", "from_camel_case", "safe_write", "safe_copy"]

_CAMEL = re.compile(r"^[A-Z][A-Za-z0-9]*$")


def user_choice(prompt: str, choices=("yes", "no"), default: str | None = None) -> str:
    """Ask until the answer (case-insensitive) is one of ``choices``; an empty answer is ``default``
    when one is given.  Returns the chosen word in lower case."""
    choices = [c.lower() for c in choices]
    if default is not None and default.lower() not in choices:
        raise ValueError(f"default {default!r} is not one of the choices {choices}")
    shown = ", ".join(c.title() if default is not None and c == default.lower() else c for c in choices)
    while True:
        answer = input(f"{prompt} [{shown}]: ").strip().lower()
        if not answer and default is not None:
            return default.lower()
        if answer in choices:
            return answer


def is_camel_case(name: str) -> bool:
    """``SessionTrial`` is; ``session_trial``, ``sessionTrial`` and ``Session_Trial`` are not."""
    return bool(_CAMEL.match(name))


def safe_write(filepath, blob: bytes) -> None:
    """Write ``blob`` to ``filepath`` through a temporary file in the same folder and a rename, so
    readers see either no file or the whole file.  An existing file is left as it is."""
    path = Path(filepath)
    if path.is_file():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_suffix(path.suffix + f".{uuid.uuid4().hex[:8]}.saving")
    try:
        with open(temp, "wb") as f:
            f.write(blob)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temp, path)
    finally:
        if temp.exists():
            temp.unlink()


def safe_copy(src, dest, overwrite: bool = False) -> None:
    """Copy ``src`` to ``dest`` through a temporary file and a rename (an existing ``dest`` is kept
    unless ``overwrite``)."""
    src, dest = Path(src), Path(dest)
    if src == dest or (dest.is_file() and not overwrite):
        return
    dest.parent.mkdir(parents=True, exist_ok=True)
    temp = dest.with_suffix(dest.suffix + f".{uuid.uuid4().hex[:8]}.copying")
    try:
        shutil.copyfile(src, temp)
        os.replace(temp, dest)
    finally:
        if temp.exists():
            temp.unlink()
