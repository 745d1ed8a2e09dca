"""`import joinflow` stays light: what most scripts never use is imported on first use."""

from __future__ import annotations

import json
import subprocess
import sys

LAZY = ("networkx", "pydot", "multiprocessing", "joinflow.diagram", "joinflow.gc", "tqdm")


def run(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout


def test_import_leaves_heavy_modules_unloaded():
    loaded = json.loads(run(f"import json, sys, joinflow; print(json.dumps([m for m in {LAZY!r} if m in sys.modules]))"))
    assert loaded == []


def test_lazy_names_still_resolve():
    out = run(
        "import joinflow as dj\n"
        "from joinflow.diagram import Diagram\n"
        "assert dj.Diagram is Diagram and dj.diagram.Diagram is Diagram\n"
        "assert dj.gc.GarbageCollector is not None\n"
        "ns = {}\n"
        "exec('from joinflow import *', ns)\n"
        "assert ns['Diagram'] is Diagram and ns['gc'] is dj.gc\n"
        "print('ok')\n"
    )
    assert out.strip() == "ok"
