"""Cost of PostgreSQL's statement savepoints (joinflow keeps one before each statement inside a
transaction so that a caught error undoes only that statement).

Run:  python benchmarks/bench_statement_savepoint.py [postgresql-url]
Prints microseconds per insert1 inside one transaction, and per key of a make-like transaction
(BEGIN, a fetch, insert1, COMMIT), with the savepoints on and off; and per key of populate()
with the "make() inserted its key" check (jobs.check_make_inserted) on and off.
"""

from __future__ import annotations

import statistics
import sys
import time

import joinflow as dj
from joinflow import testing

URL = sys.argv[1] if len(sys.argv) > 1 else testing.PG_URL
N = 1000


def main() -> None:
    cfg = dj.config.copy()
    cfg["safemode"] = False
    conn = dj.Connection(url=URL, config=cfg)
    name = testing.unique_schema_name("jfbench")
    schema = dj.Schema(name, connection=conn)

    @schema
    class Row(dj.Manual):
        definition = """
        row_id : int32
        ---
        value : float64
        """

    @schema
    class Doubled(dj.Computed):
        definition = """
        -> Row
        ---
        doubled : float64
        """

        def make(self, key):
            self.insert1(dict(key, doubled=2 * (Row & key).fetch1("value")))

    savepoints = conn._sp_sql

    def many_inserts() -> float:
        Doubled.delete_quick()
        Row.delete_quick()
        conn.start_transaction()
        start = time.perf_counter()
        for i in range(N):
            Row.insert1((i, 1.0))
        took = time.perf_counter() - start
        conn.commit_transaction()
        return took / N * 1e6

    def make_like(inserts: int) -> float:
        Doubled.delete_quick()
        Row.delete_quick()
        start = time.perf_counter()
        for i in range(N):
            with conn.transaction:
                (Row & {"row_id": i - 1}).to_arrays("value")
                for k in range(inserts):
                    Row.insert1((i + k * N, 1.0))
        return (time.perf_counter() - start) / N * 1e6

    def populate(check: bool) -> float:
        Doubled.delete_quick()
        conn.config["jobs.check_make_inserted"] = check
        start = time.perf_counter()
        Doubled.populate()
        return (time.perf_counter() - start) / N * 1e6

    try:
        Row.delete_quick()
        Row.insert([(i, float(i)) for i in range(N)])
        on, off = [], []
        for _ in range(5):
            on.append(populate(True))
            off.append(populate(False))
        print(f"{'populate() per key, jobs.check_make_inserted':45s} on {statistics.median(on):7.1f} us, off "
              f"{statistics.median(off):7.1f} us, cost {statistics.median(on) - statistics.median(off):+6.1f} us")
        for label, run in (("insert1 in one transaction", many_inserts),
                           ("transaction: fetch, insert1, commit", lambda: make_like(1)),
                           ("transaction: fetch, 2 x insert1, commit", lambda: make_like(2))):
            on, off, trips = [], [], []
            for _ in range(5):
                conn._sp_sql = savepoints
                on.append(run())
                conn._sp_sql = None
                off.append(run())
            for setting in (savepoints, None):  # round trips per unit, counted at the driver
                conn._sp_sql = setting
                sent = []
                original = conn._driver_execute
                conn._driver_execute = lambda c, sql, args: sent.append(sql) or original(c, sql, args)
                try:
                    run()
                finally:
                    del conn._driver_execute
                trips.append(len(sent) / N)
            conn._sp_sql = savepoints
            print(f"{label:45s} savepoints on {statistics.median(on):7.1f} us, off {statistics.median(off):7.1f} us, "
                  f"cost {statistics.median(on) - statistics.median(off):+6.1f} us; round trips {trips[0]:.2f} vs "
                  f"{trips[1]:.2f}")
    finally:
        conn._sp_sql = savepoints
        testing.drop_schemas(conn, [name])
        conn.close()


if __name__ == "__main__":
    main()
