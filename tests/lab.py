"""Pipelines declared into a given schema, shared by tests: the example pipeline of issue 2
(`declare_lab`) and a Source -> Square (with part Digit) populate pipeline (`declare_pipeline`)."""

import os
import time
from types import SimpleNamespace

import joinflow as dj


def declare_lab(schema) -> SimpleNamespace:
    @schema
    class Rig(dj.Lookup):
        definition = """
        rig_id : varchar(8)
        """
        contents = [("A",), ("B",)]

    @schema
    class Subject(dj.Manual):
        definition = """
        # experimental subject
        subject_id : varchar(16)
        ---
        sex = 'U' : enum('F', 'M', 'U')
        dob = null : date
        """

    @schema
    class Session(dj.Manual):
        definition = """
        -> Subject
        session_idx : int16
        ---
        started : datetime
        -> [nullable] Rig.proj(rig='rig_id')
        notes = '' : varchar(1024)   # free text
        unique index (started)
        """

        class Trial(dj.Part):
            definition = """
            -> master
            trial : int32
            ---
            outcome : bool
            """

    return SimpleNamespace(Rig=Rig, Subject=Subject, Session=Session, Trial=Session.Trial)


def fill_lab(lab, subjects=("s1", "s2"), sessions=2, trials=3) -> None:
    lab.Subject.insert([{"subject_id": s, "sex": "F"} for s in subjects])
    rows, trial_rows = [], []
    for i, s in enumerate(subjects):
        for k in range(sessions):
            rows.append({"subject_id": s, "session_idx": k, "started": f"2024-01-{i + 1:02d} 1{k}:00:00",
                         "rig": "A" if k % 2 == 0 else None})
            trial_rows += [{"subject_id": s, "session_idx": k, "trial": t, "outcome": t % 2 == 0}
                           for t in range(trials)]
    with lab.Session.connection.transaction:
        lab.Session.insert(rows)
        lab.Trial.insert(trial_rows)


def declare_pipeline(schema, calls_file=None, fail_on=(), slow_key=None):
    @schema
    class Source(dj.Manual):
        definition = """
        source_id : int32
        ---
        value : float64
        """

    @schema
    class Square(dj.Computed):
        definition = """
        -> Source
        ---
        squared : float64
        """

        class Digit(dj.Part):
            definition = """
            -> master
            position : int16
            ---
            digit : int16
            """

        def make(self, key):
            if calls_file:
                with open(calls_file, "a") as f:
                    f.write(f"{key['source_id']}\n")
            value = (Source & key).fetch1("value")
            self.insert1(dict(key, squared=value * value))
            if slow_key is not None and slow_key in (key["source_id"], "all") and os.environ.get("JF_TEST_SLOW"):
                if os.environ.get("JF_TEST_SLOW_MARK"):  # tells the test that make() is now sleeping
                    open(os.environ["JF_TEST_SLOW_MARK"], "w").close()
                time.sleep(60)  # killed here, master row inserted, parts not yet
            if key["source_id"] in fail_on:
                raise ValueError(f"cannot square {key['source_id']}")
            digits = str(int(value))
            self.Digit.insert([dict(key, position=i, digit=int(d)) for i, d in enumerate(digits)])

    return Source, Square
