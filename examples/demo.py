"""joinflow demo: an LC-MS-like pipeline, end to end, on the zero-set-up default database.

Run it with ``./dev demo`` (a fresh temporary working directory, no configuration), or
``python examples/demo.py`` anywhere.  With no configuration joinflow uses the SQLite file
``joinflow.db`` in the working directory; ``JOINFLOW_DATABASE_URL`` points it elsewhere.

The tables live in ``examples/lcms/pipeline.py``.  Each step below prints what it did.
"""

from __future__ import annotations

import datetime
import sys
from pathlib import Path

import numpy as np
import pandas as pd

import joinflow as dj

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))  # so that `lcms.pipeline` is importable as a module

SCHEMA = "lcms"


def step(number: int, title: str) -> None:
    print(f"\n[{number}] {title}")


def say(text: str = "") -> None:
    print("    " + text)


def indented(text: str) -> None:
    for line in str(text).rstrip("\n").splitlines():
        say(line)


def row_counts(schema) -> str:
    """Rows per table of the schema, parents first."""
    conn = schema.connection
    counts = []
    for name in schema.list_tables():
        table = dj.FreeTable(conn, conn.backend.full_table_name(schema.database, name))
        counts.append(f"{name}={len(table)}")
    return ", ".join(counts)


def start_clean() -> None:
    """The demo owns the schema `lcms`: drop what an earlier run of the demo left behind."""
    if SCHEMA in dj.list_schemas():
        say(f"(schema `{SCHEMA}` exists from an earlier run of the demo; dropping it first)")
        dj.Schema(SCHEMA).drop(prompt=False)


def make_spectra(keys: list[dict], scans_per_run: int = 4) -> np.ndarray:
    """Synthetic scans as a numpy record array, deterministic (seeded)."""
    rng = np.random.default_rng(7)
    dtype = [("sample_id", "U16"), ("run_idx", "i2"), ("scan", "i4"), ("rt", "f8"),
             ("ms_level", "i1"), ("base_peak_mz", "f8"), ("tic", "f8")]
    rows = []
    for key in keys:
        for scan in range(1, scans_per_run + 1):
            rows.append((key["sample_id"], key["run_idx"], scan, 60.0 + 1.5 * scan,
                         1 if scan % 2 else 2, round(float(rng.uniform(100, 900)), 2),
                         float(round(rng.lognormal(14, 1)))))
    return np.array(rows, dtype=dtype)


def main() -> int:
    print(f"joinflow {dj.__version__} demo: the relational workflow model "
          "(tables are steps, rows are artifacts, foreign keys are the order)")
    conn = dj.conn()
    url = conn.url.render_as_string(hide_password=True)
    say(f"backend: {conn.backend.name}   database: {url}")
    if conn.backend.name == "sqlite":
        say("(no configuration given: the embedded SQLite default file in the working directory)")
    start_clean()

    # ---------------------------------------------------------------------------------------
    step(1, "Declare the pipeline module examples/lcms/pipeline.py")
    from lcms import pipeline
    from lcms.pipeline import Instrument, PeakSummary, Run, Sample

    schema = pipeline.schema
    say(f"{schema!r}: tables in dependency order (schema.list_tables()):")
    say("  " + " -> ".join(schema.list_tables()))
    say(f"Instrument is a Lookup: its `contents` gave {len(Instrument())} rows on declaration")

    # ---------------------------------------------------------------------------------------
    step(2, "Insert rows (dicts, a pandas DataFrame, numpy records)")
    Sample.insert([
        {"sample_id": "S1", "organism": "human", "matrix": "plasma", "collected": "2024-03-01"},
        {"sample_id": "S2", "organism": "mouse", "matrix": "liver", "collected": datetime.date(2024, 3, 2)},
        {"sample_id": "S3", "organism": "yeast", "matrix": "culture", "collected": None},
    ])
    say(f"Sample.insert(list of 3 dicts)            -> Sample has {len(Sample())} rows")
    runs = pd.DataFrame({
        "sample_id": ["S1", "S1", "S2", "S2", "S3"],
        "run_idx": [1, 2, 1, 2, 1],
        "ms": ["orbi1", "orbi1", "qtof1", "orbi1", None],  # S3 ran on an unregistered instrument
        "acquired": pd.to_datetime(["2024-03-04 09:00", "2024-03-04 10:30", "2024-03-05 11:00",
                                    "2024-03-05 13:15", "2024-03-06 08:45"]),
        "polarity": ["positive", "negative", "positive", "negative", "positive"],
    })
    Run.insert(runs)
    say(f"Run.insert(DataFrame of {len(runs)} rows)          -> Run has {len(Run())} rows "
        "(gradient_min, notes: defaults)")
    spectra = make_spectra(Run.keys())
    Run.Spectrum.insert(spectra)
    say(f"Run.Spectrum.insert(numpy records, {len(spectra)} rows) -> Run.Spectrum has "
        f"{len(Run.Spectrum())} rows")

    # ---------------------------------------------------------------------------------------
    step(3, "Query: restriction, projection, join, fetch")
    s1 = Run & {"sample_id": "S1"}
    say(f"Run & {{'sample_id': 'S1'}}               -> {len(s1)} rows, run_idx "
        f"{[k['run_idx'] for k in s1.keys()]}")
    negative = Run & "polarity = 'negative' AND gradient_min >= 30"
    say(f"Run & \"polarity = 'negative' AND ...\"    -> {len(negative)} rows")
    say("Run.proj('acquired', instrument_id='ms') * Instrument  (rename, then natural join):")
    joined = Run.proj("acquired", instrument_id="ms") * Instrument
    indented(joined.to_pandas(order_by="KEY")[["instrument_id", "vendor", "model"]].to_string())
    say("(run S3/1 has no instrument (ms is NULL), so the inner join leaves it out)")
    frame = (Run * Sample & "organism = 'mouse'").to_pandas()
    say(f"(Run * Sample & \"organism = 'mouse'\").to_pandas(): {frame.shape[0]} rows x "
        f"{frame.shape[1]} columns, index {list(frame.index.names)}")
    say("Run.Spectrum.head(2):")
    for row in Run.Spectrum.head(2):
        say(f"  {row}")

    # ---------------------------------------------------------------------------------------
    step(4, "Run.describe(): the definition, rebuilt from the database catalog")
    indented(Run.describe())

    # ---------------------------------------------------------------------------------------
    step(5, "Computed steps")
    pending = len(Run.proj() - PeakSummary.proj())
    say(f"computed steps: PeakSummary (table {PeakSummary.table_name}): {len(PeakSummary())} rows, "
        f"pending keys: {pending}")
    say("the pending count comes from the query algebra: len(Run.proj() - PeakSummary.proj())")
    result = PeakSummary.populate(reserve_jobs=True, suppress_errors=True)
    say(f"PeakSummary.populate(reserve_jobs=True) -> {result['success_count']} keys computed, "
        f"{len(result['error_list'])} errors; progress() (remaining, total) = {PeakSummary.progress()}")
    for row in PeakSummary.head(2):
        say(f"  {row}")

    # ---------------------------------------------------------------------------------------
    step(6, "update1: change secondary attributes of one row")
    key = {"sample_id": "S1", "run_idx": 2}
    before = (Run & key).fetch1("gradient_min", "notes")
    Run.update1({**key, "gradient_min": 45, "notes": "new column"})
    after = (Run & key).fetch1("gradient_min", "notes")
    say(f"Run {key}: (gradient_min, notes) {before} -> {after}")
    Run.update1({**key, "notes": None})
    say(f"update1 with notes=None restores its default -> {(Run & key).fetch1('notes')!r}")

    # ---------------------------------------------------------------------------------------
    step(7, "A transaction rolled back on error")
    try:
        with dj.conn().transaction:
            Sample.insert1({"sample_id": "S4", "organism": "human", "matrix": "urine", "collected": None})
            Run.insert1({"sample_id": "S4", "run_idx": 1, "ms": "orbi1", "acquired": "2024-03-07 09:00:00",
                         "polarity": "positive"})
            say(f"inside the transaction: Sample S4 and its run inserted ({len(Run & {'sample_id': 'S4'})} run)")
            say("now a spectrum of run S4/2, which does not exist (a foreign-key violation):")
            Run.Spectrum.insert1({"sample_id": "S4", "run_idx": 2, "scan": 1, "rt": 61.0,
                                  "ms_level": 1, "base_peak_mz": 410.2, "tic": 1.0e6})
    except dj.errors.IntegrityError as exc:
        say(f"error midway: {type(exc).__name__}: {str(exc).split(':')[0]}; the transaction rolled back")
    say(f"after rollback: Sample S4 rows = {len(Sample & {'sample_id': 'S4'})}, "
        f"Run S4 rows = {len(Run & {'sample_id': 'S4'})}  (nothing was inserted)")

    # ---------------------------------------------------------------------------------------
    step(8, "A cascading delete (safemode off: no confirmation prompt)")
    dj.config["safemode"] = False
    say(f"before: {row_counts(schema)}")
    deleted = (Sample & "organism = 'mouse'").delete()
    say(f"(Sample & \"organism = 'mouse'\").delete() -> {deleted} sample deleted, with its runs and spectra")
    say(f"after:  {row_counts(schema)}")

    print(f"\ndemo finished: all 8 steps ran against {conn.backend.name}.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
