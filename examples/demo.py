"""joinflow demo: an LC-MS-like pipeline, end to end, on the zero-set-up default database.

Run it with ``./dev demo`` (a fresh temporary working directory, no configuration), or
``python examples/demo.py`` anywhere.  With no configuration joinflow uses the SQLite file
``joinflow.db`` in the working directory; ``JOINFLOW_DATABASE_URL`` points it elsewhere.

The tables live in ``examples/lcms/pipeline.py``: samples are injected (runs), the
simulated instrument writes a raw file per run, and the pipeline reads the scans, centroids
them, detects peaks and summarizes each run.  Each step below prints what it did.
"""

from __future__ import annotations

import datetime
import os
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


def spikes(keys: list[dict]) -> np.ndarray:
    """Internal standards per run as a numpy record array: three standards, the last run two."""
    dtype = [("sample_id", "U16"), ("run_idx", "i2"), ("standard", "U32"), ("amount_pmol", "f4")]
    rows = []
    for i, key in enumerate(keys):
        for standard, amount in [("caffeine", 2.0), ("leu-enkephalin", 1.0), ("reserpine", 0.5)][:3 - (i == len(keys) - 1)]:
            rows.append((key["sample_id"], key["run_idx"], standard, amount))
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
    # the simulated instrument writes its raw files here (Acquisition reads them back)
    os.environ.setdefault("LCMS_RAW_DIR", str(Path.cwd() / "lcms-raw"))

    # ---------------------------------------------------------------------------------------
    step(1, "Declare the pipeline module examples/lcms/pipeline.py")
    from lcms import pipeline
    from lcms.pipeline import Acquisition, Centroid, DetectedPeaks, Instrument, PeakSummary, Run, Sample, Standard

    schema = pipeline.schema
    say(f"{schema!r}: tables in dependency order (schema.list_tables()):")
    say("  " + " -> ".join(schema.list_tables()))
    say(f"Instrument and Standard are Lookups: their `contents` gave {len(Instrument())} and "
        f"{len(Standard())} rows on declaration")

    # ---------------------------------------------------------------------------------------
    step(2, "Insert rows (dicts, a pandas DataFrame, numpy records)")
    Sample.insert([
        {"sample_id": "S1", "organism": "human", "matrix": "plasma", "collected": "2024-03-01"},
        {"sample_id": "S2", "organism": "mouse", "matrix": "liver", "collected": datetime.date(2024, 3, 2)},
        {"sample_id": "S3", "organism": "yeast", "matrix": "culture", "collected": None},
    ])
    say(f"{'Sample.insert(list of 3 dicts)':<38} -> Sample has {len(Sample())} rows")
    runs = pd.DataFrame({
        "sample_id": ["S1", "S1", "S2", "S2", "S3"],
        "run_idx": [1, 2, 1, 2, 1],
        "ms": ["orbi1", "orbi1", "qtof1", "orbi1", None],  # S3 ran on an unregistered instrument
        "acquired": pd.to_datetime(["2024-03-04 09:00", "2024-03-04 10:30", "2024-03-05 11:00",
                                    "2024-03-05 13:15", "2024-03-06 08:45"]),
        "polarity": ["positive", "negative", "positive", "negative", "positive"],
    })
    Run.insert(runs)
    say(f"{f'Run.insert(DataFrame of {len(runs)} rows)':<38} -> Run has {len(Run())} rows "
        "(gradient_min, notes: defaults)")
    spiked = spikes(Run.keys(order_by="KEY"))
    Run.Spike.insert(spiked)
    say(f"{f'Run.Spike.insert(numpy records, {len(spiked)} rows)':<38} -> Run.Spike has {len(Run.Spike())} rows "
        "(internal standards per injection)")

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
    late = Run.Spike * Standard & "rt_expected > 1000"
    say(f"Run.Spike * Standard & \"rt_expected > 1000\" -> {len(late)} spikes of late-eluting standards")

    # ---------------------------------------------------------------------------------------
    step(4, "Run.describe(): the definition, rebuilt from the database catalog")
    indented(Run.describe())

    # ---------------------------------------------------------------------------------------
    step(5, "An Imported step: Acquisition reads each run's raw file into scans (blobs in the table)")
    say(f"pending: {len(Acquisition.key_source - Acquisition.proj())} runs; raw files in $LCMS_RAW_DIR "
        f"= {os.environ['LCMS_RAW_DIR']}")
    result = Acquisition.populate(display_progress=False)
    say(f"Acquisition.populate() -> {result['success_count']} runs read, "
        f"Acquisition.Scan has {len(Acquisition.Scan())} scans "
        f"({len(Acquisition.Scan & 'ms_level = 2')} of them MS2)")
    scan = (Acquisition.Scan & {"sample_id": "S1", "run_idx": 1, "scan": 5}).fetch1()
    say(f"scan S1/1/5: rt {scan['rt']:.1f} s, ms_level {scan['ms_level']}, TIC {scan['tic']:.3g}; "
        f"mz and intensity are numpy arrays of {scan['mz'].shape[0]} profile points "
        f"(<blob>, dtype {scan['mz'].dtype})")

    # ---------------------------------------------------------------------------------------
    step(6, "Computed steps: centroid the spectra, detect peaks, summarize each run")
    for table in (Centroid, DetectedPeaks, PeakSummary):
        pending, total = table.progress(display=False)
        result = table.populate(reserve_jobs=True, suppress_errors=True, display_progress=False)
        say(f"{table.__name__ + '.populate(reserve_jobs=True)':<45} {pending} of {total} pending -> "
            f"{result['success_count']} computed, {len(result['error_list'])} errors")
    say(f"Centroid.Spectrum: {len(Centroid.Spectrum())} centroided spectra; DetectedPeaks.Peak: "
        f"{len(DetectedPeaks.Peak())} peaks")
    say("the three most intense peaks of run S1/1:")
    top = (DetectedPeaks.Peak & {"sample_id": "S1", "run_idx": 1}).to_pandas(order_by="intensity DESC", limit=3)
    indented(top[["mz", "rt", "intensity", "n_scans"]].round(4).to_string())
    say("PeakSummary (standards_found: spiked standards recovered; mass_error_ppm: their median error):")
    summary = PeakSummary.to_pandas(order_by="KEY")
    indented(summary[["n_spectra", "n_peaks", "standards_found", "mass_error_ppm"]].round(2).to_string())

    # ---------------------------------------------------------------------------------------
    step(7, "update1: change secondary attributes of one row")
    key = {"sample_id": "S1", "run_idx": 2}
    before = (Run & key).fetch1("gradient_min", "notes")
    Run.update1({**key, "gradient_min": 45, "notes": "new column"})
    after = (Run & key).fetch1("gradient_min", "notes")
    say(f"Run {key}: (gradient_min, notes) {before} -> {after}")
    Run.update1({**key, "notes": None})
    say(f"update1 with notes=None restores its default -> {(Run & key).fetch1('notes')!r}")

    # ---------------------------------------------------------------------------------------
    step(8, "A transaction rolled back on error")
    try:
        with dj.conn().transaction:
            Sample.insert1({"sample_id": "S4", "organism": "human", "matrix": "urine", "collected": None})
            Run.insert1({"sample_id": "S4", "run_idx": 1, "ms": "orbi1", "acquired": "2024-03-07 09:00:00",
                         "polarity": "positive"})
            say(f"inside the transaction: Sample S4 and its run inserted ({len(Run & {'sample_id': 'S4'})} run)")
            say("now a spike of a standard that is not in the Standard lookup (a foreign-key violation):")
            Run.Spike.insert1({"sample_id": "S4", "run_idx": 1, "standard": "unobtainium", "amount_pmol": 1.0})
    except dj.errors.IntegrityError as exc:
        say(f"error midway: {type(exc).__name__}: {str(exc).split(':')[0]}; the transaction rolled back")
    say(f"after rollback: Sample S4 rows = {len(Sample & {'sample_id': 'S4'})}, "
        f"Run S4 rows = {len(Run & {'sample_id': 'S4'})}  (nothing was inserted)")

    # ---------------------------------------------------------------------------------------
    step(9, "A cascading delete (safemode off: no confirmation prompt)")
    dj.config["safemode"] = False
    say(f"before: {row_counts(schema)}")
    deleted = (Sample & "organism = 'mouse'").delete()
    say(f"(Sample & \"organism = 'mouse'\").delete() -> {deleted} sample deleted, with its runs, "
        "scans, spectra, peaks and summaries")
    say(f"after:  {row_counts(schema)}")

    print(f"\ndemo finished: all 9 steps ran against {conn.backend.name}.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
