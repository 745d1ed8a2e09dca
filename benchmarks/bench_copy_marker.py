"""What recording objects in the ``~copy`` marker costs a ``joinflow copy``.

Copies N rows, each with an ``<object@>`` and a ``<blob@>`` (N + 50 objects: the blobs repeat), from SQLite to
PostgreSQL between two local stores, twice: as shipped (each batch's objects recorded in the
target's marker before they are written), and with recording switched off.  Prints seconds.

    python benchmarks/bench_copy_marker.py [N] [postgresql|mysql|sqlite]
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import joinflow as dj
from joinflow import copy as copy_module
from joinflow import testing


def main(n: int = 2000, backend: str = "postgresql") -> None:
    tmp = Path(tempfile.mkdtemp())
    source_url = f"sqlite:///{tmp / 'source.db'}"
    target_url = testing.database_url(backend, tmp / "t") if backend != "sqlite" else f"sqlite:///{tmp / 't.db'}"

    def cfg(folder):
        c = dj.config.copy()
        c["safemode"] = False
        c["stores"] = {"default": "main", "main": {"protocol": "file", "location": str(tmp / folder)}}
        return c

    source_cfg = cfg("source_store")
    name = testing.unique_schema_name("bench")
    with dj.Connection(url=source_url, config=source_cfg) as conn:
        schema = dj.Schema(name, connection=conn)

        @schema
        class Item(dj.Manual):
            definition = """
            item_id : int32
            ---
            obj : <object@>
            arr : <blob@>
            """

        Item.insert([{"item_id": i, "obj": f"object {i}".encode(), "arr": np.arange(i % 50 + 1)} for i in range(n)])
    real = copy_module._ObjectMover.flush
    results = {}
    for label in ("recorded", "not recorded"):
        target = f"{name}_{'r' if label == 'recorded' else 'n'}"
        if label == "not recorded":
            def flush(self, schema):
                self.record = None
                return real(self, schema)

            copy_module._ObjectMover.flush = flush
        start = time.perf_counter()
        report = copy_module.copy_schemas({name: target}, source_url, target_url, source_config=source_cfg,
                                          target_config=cfg(f"target_{label[0]}"), progress=False)
        results[label] = time.perf_counter() - start
        copy_module._ObjectMover.flush = real
        testing.drop_schemas(target_url, [target])
        assert report.objects_copied == n + min(n, 50), report.objects_copied
    for label, seconds in results.items():
        print(f"{n} rows, {n + min(n, 50)} objects, SQLite -> {backend}: {label}: {seconds:.2f} s")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 2000, sys.argv[2] if len(sys.argv) > 2 else "postgresql")
