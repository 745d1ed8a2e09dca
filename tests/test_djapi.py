"""DataJoint 2.x API behaviours joinflow matches (issue 21, items 5, 6, 8-12 and the module surface)."""

from __future__ import annotations

import numpy as np
import pytest

import joinflow as dj


# -- insert(replace=True) replaces the whole row -------------------------------------------------
def test_replace_resets_columns_not_given(schema):
    @schema
    class Sample(dj.Manual):
        definition = """
        sample_id : int32
        ---
        label = "none" : varchar(20)
        weight = null : float64
        note = null : varchar(40)
        data = null : <blob>
        stamp = CURRENT_TIMESTAMP : datetime
        """

    @schema
    class Child(dj.Manual):
        definition = """
        -> Sample
        """

    Sample.insert1(dict(sample_id=1, label="first", weight=2.5, note="kept?", data=[1, 2]))
    Child.insert1(dict(sample_id=1))
    Sample.insert1(dict(sample_id=1, weight=3.5), replace=True)
    row = Sample.fetch1()
    assert row["stamp"] is not None
    del row["stamp"]
    assert row == dict(sample_id=1, label="none", weight=3.5, note=None, data=None)
    assert len(Child()) == 1  # the row is replaced in place: rows that reference it stay
    # a row given in full replaces every column; other rows are untouched
    Sample.insert1(dict(sample_id=2, label="two"))
    Sample.insert([dict(sample_id=1, label="x", weight=1.0, note="n")], replace=True)
    assert Sample.proj("label", "weight", "note").to_dicts(order_by="sample_id") == [
        dict(sample_id=1, label="x", weight=1.0, note="n"),
        dict(sample_id=2, label="two", weight=None, note=None),
    ]


# -- insert from a CSV file keeps text as written ------------------------------------------------
def test_insert_csv_keeps_leading_zeros(schema, tmp_path):
    @schema
    class Student(dj.Manual):
        definition = """
        student_id : int32
        ---
        home_zip : char(10)
        phone = null : varchar(20)
        gpa = null : float64
        born = null : date
        """

    path = tmp_path / "Student.csv"
    path.write_text(
        "student_id,home_zip,phone,gpa,born\n"
        "100,01352,007,3.5,1991-05-09\n"
        "101,50324,+1-542,,\n"
    )
    Student.insert(path)
    assert Student.to_dicts(order_by="student_id") == [
        dict(student_id=100, home_zip="01352", phone="007", gpa=3.5, born=__import__("datetime").date(1991, 5, 9)),
        dict(student_id=101, home_zip="50324", phone="+1-542", gpa=None, born=None),
    ]
    Student.delete_quick()
    Student.insert(str(path))  # a path given as text
    assert list(Student.to_arrays("home_zip", order_by="student_id")) == ["01352", "50324"]


# -- to_arrays: floats as float64, as DataJoint ----------------------------------------------------
def test_nullable_float32_fetches_as_float64_nan(schema):
    @schema
    class Numbers(dj.Manual):
        definition = """
        k : int8
        ---
        f = null : float32
        d = null : float64
        i = null : int32
        n : int16
        """

    Numbers.insert([(1, 0.5, 1.5, 7, 3), (2, None, None, None, 4)])
    f, d, i, n, k = Numbers.to_arrays("f", "d", "i", "n", "k", order_by="k")
    assert f.dtype == np.float64 and d.dtype == np.float64
    assert f[0] == 0.5 and isinstance(f[1], float) and np.isnan(f[1])  # a NaN that is a Python float
    assert i.tolist() == [7, None]
    assert n.dtype == np.int64 and k.dtype == np.int64  # integers as 64 bits: sums do not wrap


# -- writes are refused while the query cache is on --------------------------------------------------
def test_insert_refused_while_query_cache_on(schema, tmp_path):
    @schema
    class Cached(dj.Manual):
        definition = """
        k : int32
        """

    conn = schema.connection
    Cached.insert1((1,))
    conn.config["query_cache"] = str(tmp_path / "cache")
    conn.set_query_cache("main")
    try:
        with pytest.raises(dj.DataJointError, match="set_query_cache"):
            Cached.insert1((2,))
    finally:
        conn.set_query_cache()
    assert Cached.keys() == [{"k": 1}]


# -- Ctrl-C in make() is an error job, and populate stops ------------------------------------------
def test_keyboard_interrupt_in_make_is_an_error_job(schema):
    @schema
    class Source(dj.Manual):
        definition = """
        k : int32
        """

    @schema
    class Interrupted(dj.Computed):
        definition = """
        -> Source
        ---
        v : int32
        """

        def make(self, key):
            self.insert1(dict(key, v=1))
            raise KeyboardInterrupt

    Source.insert([(1,), (2,)])
    with pytest.raises(KeyboardInterrupt):
        Interrupted.populate(reserve_jobs=True, suppress_errors=True)  # never swallowed
    assert len(Interrupted()) == 0  # rolled back
    status, message = Interrupted.jobs.errors.fetch1("status", "error_message")
    assert status == "error" and "KeyboardInterrupt" in message
    assert len(Interrupted.jobs.pending) == 1 and len(Interrupted.jobs.reserved) == 0


# -- insert_dataframe, to_arrow, to_polars ---------------------------------------------------------
def declare_measure(schema):
    @schema
    class Measure(dj.Manual):
        definition = """
        subject : varchar(8)
        trial : int32
        ---
        value = null : float64
        """

    return Measure


def test_insert_dataframe_round_trip(schema):
    import pandas as pd

    Measure = declare_measure(schema)
    Measure.insert([("a", 1, 1.0), ("a", 2, 2.0)])
    df = Measure.to_pandas()  # primary key as the index
    df["value"] = df["value"] * 10
    Measure.insert_dataframe(df, replace=True)  # the index is the primary key: used as columns
    assert Measure.to_arrays("value", order_by="trial").tolist() == [10.0, 20.0]
    Measure.insert_dataframe(pd.DataFrame({"subject": ["b"], "trial": [1], "value": [5.0]}))  # unnamed index: dropped
    assert len(Measure()) == 3
    wrong = pd.DataFrame({"value": [1.0]}, index=pd.Index([9], name="trial"))
    with pytest.raises(dj.DataJointError, match="index_as_pk=False"):
        Measure.insert_dataframe(wrong, index_as_pk=True)
    with pytest.raises(dj.DataJointError, match="DataFrame"):
        Measure.insert_dataframe([{"subject": "c", "trial": 1}])
    assert len(Measure()) == 3


def test_to_arrow_and_to_polars(schema):
    pa = pytest.importorskip("pyarrow")
    pl = pytest.importorskip("polars")
    Measure = declare_measure(schema)
    assert Measure.to_arrow().column_names == ["subject", "trial", "value"]  # empty: the columns still
    Measure.insert([("a", 1, 1.5), ("b", 2, None)])
    table = Measure.to_arrow(order_by="trial")
    assert isinstance(table, pa.Table) and table.to_pylist() == [
        dict(subject="a", trial=1, value=1.5), dict(subject="b", trial=2, value=None)]
    frame = Measure.to_polars(order_by="trial")
    assert isinstance(frame, pl.DataFrame) and frame.columns == ["subject", "trial", "value"]
    assert frame["trial"].to_list() == [1, 2]
    # and back: insert takes a pyarrow Table or a polars DataFrame
    Measure.delete_quick()
    Measure.insert(table)
    Measure.insert(frame.with_columns(pl.col("trial") + 10))
    assert sorted(Measure.to_arrays("trial").tolist()) == [1, 2, 11, 12]


def test_to_arrow_without_pyarrow_names_the_install(schema, monkeypatch):
    import builtins

    Measure = declare_measure(schema)
    real_import = builtins.__import__

    def no_pyarrow(name, *args, **kwargs):
        if name.split(".")[0] in ("pyarrow", "polars"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_pyarrow)
    monkeypatch.delitem(__import__("sys").modules, "pyarrow", raising=False)
    monkeypatch.delitem(__import__("sys").modules, "polars", raising=False)
    with pytest.raises(ImportError, match="pip install pyarrow"):
        Measure.to_arrow()
    with pytest.raises(dj.DataJointError, match="pip install polars"):
        Measure.to_polars()


# -- config.override with a section as a dict ------------------------------------------------------
def test_config_override_nested_section():
    before = dj.config["jobs.add_job_metadata"]
    with dj.config.override(jobs={"add_job_metadata": not before}, safemode=False):
        assert dj.config["jobs.add_job_metadata"] is (not before)
    assert dj.config["jobs.add_job_metadata"] is before
    with pytest.raises(dj.DataJointError, match="Unknown configuration"):
        with dj.config.override(nosuch={"x": 1}):
            pass
    with pytest.raises(dj.DataJointError, match="Unknown configuration"):
        with dj.config.override(jobs={"nosuch": 1}):
            pass
    assert dj.config["jobs.add_job_metadata"] is before


# -- iterating a Schema; make_classes into the caller's namespace --------------------------------
def test_schema_iterates_tables_and_make_classes_fills_caller(schema, connection):
    Measure = declare_measure(schema)

    @schema
    class Note(dj.Manual):
        definition = """
        -> Measure
        ---
        text : varchar(40)
        """

    tables = list(schema)
    assert [t.table_name for t in tables] == ["measure", "note"]
    assert all(isinstance(t, dj.FreeTable) for t in tables)
    def load():
        other = dj.Schema(schema.database, connection=connection, create_schema=False)
        other.make_classes()  # into=None: the calling function's namespace, as DataJoint
        return {k: v for k, v in locals().items() if isinstance(v, type)}

    made = load()
    assert set(made) == {"Measure", "Note"}
    assert issubclass(made["Note"], dj.Manual) and made["Note"].full_table_name == Note.full_table_name
    assert made["Note"] is not Note and len(made["Measure"]()) == 0


# -- validate() and positional rows, as DataJoint ---------------------------------------------------
def declare_simple(schema):
    @schema
    class Simple(dj.Manual):
        definition = """
        id : int32
        ---
        value : varchar(20)
        score = null : float64
        """

    return Simple


def test_positional_rows_give_every_attribute_and_warn(schema):
    import warnings

    Simple = declare_simple(schema)
    with pytest.warns(DeprecationWarning, match="Positional inserts"):
        result = Simple.validate([(1, "one")])  # too short: score would be left to the order
    assert not result and result.rows_checked == 1
    assert result.errors == [(0, None, "Incorrect number of attributes: 2 given, 3 expected")]
    with pytest.warns(DeprecationWarning, match="Positional inserts"):
        with pytest.raises(dj.DataJointError, match="Incorrect number of attributes: 2 given; 3 expected"):
            Simple.insert1((1, "one"))
    assert len(Simple()) == 0
    with pytest.warns(DeprecationWarning, match="Positional inserts"):
        Simple.insert1((1, "one", 1.0))
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)  # dicts and numpy records do not warn
        Simple.insert1({"id": 2, "value": "two"})
        record = np.array([(3, "three", 3.0)], dtype=[("id", int), ("value", "U10"), ("score", float)])[0]
        Simple.insert1(record)
    assert len(Simple()) == 3


def test_validation_result_as_datajoint():
    result = dj.ValidationResult(is_valid=True, errors=[], rows_checked=5)
    assert result and result.summary() == "Validation passed: 5 rows checked"
    errors = [(0, "field1", "error1"), (1, None, "error2")] + [(k, "f", "e") for k in range(2, 12)]
    result = dj.ValidationResult(is_valid=False, errors=errors, rows_checked=12)
    assert not result
    lines = result.summary().split("\n")
    assert lines[:3] == ["Validation failed: 12 error(s) in 12 rows", "  Row 0 in field 'field1': error1",
                         "  Row 1: error2"]
    assert len(lines) == 12 and lines[-1] == "  ... and 2 more errors"  # the first 10 listed
    with pytest.raises(dj.DataJointError, match="Validation failed"):
        result.raise_if_invalid()


# -- schema names with capitals; ~lineage comes with the first table ------------------------------
def test_uppercase_schema_name(connection, schema_names):
    upper = "Jf_" + schema_names()[3:]  # e.g. Jf_gw_1a2b3c4d, dropped afterwards
    first = dj.Schema(upper, connection=connection)
    try:
        @first
        class Subject(dj.Manual):
            definition = """
            name : varchar(32)
            """

        assert first.database == upper and upper in dj.list_schemas(connection=connection)
        module = dj.VirtualModule("Schema_A", upper, connection=connection)
        second = dj.Schema(schema_names(), connection=connection)

        @second
        class Recording(dj.Manual):
            definition = """
            -> module.Subject
            id : int16
            """

        Subject.insert1({"name": "mouse"})
        Recording.insert1({"name": "mouse", "id": 1})
        assert (Recording * module.Subject).to_dicts() == [{"name": "mouse", "id": 1}]
        second.drop(prompt=False)
    finally:
        first.drop(prompt=False)
    assert upper not in dj.list_schemas(connection=connection)


def test_lineage_table_comes_with_the_first_table(schema):
    # activating an empty schema creates no table (on SQLite, where a schema is a name prefix,
    # ~lineage is what makes the empty schema exist)
    assert schema.lineage_table_exists is (schema.connection.backend.name == "sqlite")
    assert schema.exists and schema.database in dj.list_schemas(connection=schema.connection)
    Measure = declare_measure(schema)
    assert schema.lineage_table_exists
    assert schema.lineage[f"{schema.database}.measure.trial"] == f"{schema.database}.measure.trial"
    assert [t.table_name for t in schema] == ["measure"]
    assert len(Measure * Measure.proj()) == 0  # semantic matching reads it


# -- a Part named like an outer table refers to the outer table -----------------------------------
def test_part_named_like_outer_table(schema):
    @schema
    class Unit(dj.Manual):
        definition = """
        id : int32
        """

    @schema
    class Cell(dj.Manual):
        definition = """
        type : varchar(32)
        """

        class Unit(dj.Part):
            definition = """
            -> master
            -> Unit
            """

    assert Cell.Unit.primary_key == ["type", "id"]
    assert Unit.full_table_name in Cell.Unit.parents()
    Unit.insert1({"id": 1})
    Cell.insert1({"type": "pyramidal"})
    Cell.Unit.insert1({"type": "pyramidal", "id": 1})
    assert len(Cell.Unit()) == 1


# -- the public module surface of DataJoint 2.x ----------------------------------------------------
def test_public_module_surface(tmp_path, monkeypatch):
    import importlib

    for name in ("AutoPopulate", "Job", "MatCell", "MatStruct", "utils", "lineage", "migrate"):
        assert name in dj.__all__ and getattr(dj, name) is not None
    assert issubclass(dj.Computed, dj.AutoPopulate)
    assert dj.MatCell is importlib.import_module("joinflow.blob").MatCell
    assert callable(dj.Connection.register)
    utils = dj.utils
    assert utils.to_camel_case("session_trial") == "SessionTrial"
    assert utils.from_camel_case("SessionTrial") == "session_trial"
    assert utils.is_camel_case("SessionTrial") and not utils.is_camel_case("session_trial")
    target = tmp_path / "sub" / "x.bin"
    utils.safe_write(target, b"abc")
    utils.safe_write(target, b"other")  # an existing file is kept
    assert target.read_bytes() == b"abc"
    utils.safe_copy(target, tmp_path / "y.bin")
    assert (tmp_path / "y.bin").read_bytes() == b"abc"
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["sub", "x.bin", "y.bin"]  # no temporary files left
    answers = iter(["maybe", "", "YES"])
    monkeypatch.setattr("builtins.input", lambda prompt: next(answers))
    assert utils.user_choice("Go on?", default="no") == "no"
    assert utils.user_choice("Go on?") == "yes"


def test_lineage_and_migrate_helpers(schema, connection):
    Measure = declare_measure(schema)

    @schema
    class Note(dj.Manual):
        definition = """
        -> Measure
        ---
        text : varchar(40)
        """

    db = schema.database
    assert dj.lineage.lineage_table_exists(connection, db)
    assert dj.lineage.get_lineage(connection, db, "note", "trial") == f"{db}.measure.trial"
    assert dj.lineage.get_table_lineages(connection, db, "measure") == {
        "subject": f"{db}.measure.subject", "trial": f"{db}.measure.trial"}
    dj.lineage.delete_table_lineages(connection, db, "note")
    assert dj.lineage.get_table_lineages(connection, db, "note") == {}
    plan = dj.migrate.rebuild_lineage(schema)  # dry run: nothing written
    assert plan == {"tables_analyzed": 2, "lineage_entries": 4, "status": "dry_run"}
    assert dj.lineage.get_table_lineages(connection, db, "note") == {}
    done = dj.migrate.rebuild_lineage(schema, dry_run=False)
    assert done == {"tables_analyzed": 2, "lineage_entries": 4, "status": "rebuilt"}
    assert dj.lineage.get_schema_lineages(connection, db)[f"{db}.note.subject"] == f"{db}.measure.subject"
    connection.register(schema)
    assert connection.schemas[db] is schema


# -- <blob> bytes are DataJoint's, so hash-addressed stores deduplicate across clients -------------
def test_large_noise_blob_has_datajoint_bytes(schema, tmp_path):
    import warnings

    noise = np.random.default_rng(3).standard_normal(40_000)  # 320 KiB of float64 noise: zlib saves ~4%
    packed = dj.blob.pack(noise)
    assert packed.startswith(b"ZL123\0")  # compressed, as DataJoint compresses it
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        djblob = pytest.importorskip("datajoint.blob")
    assert packed == djblob.pack(noise)  # byte for byte: the same content hash in <blob@>/<hash@>
    conn = schema.connection
    conn.config["stores"] = {"default": "main", "main": {"protocol": "file", "location": str(tmp_path / "store")}}

    @schema
    class Trace(dj.Manual):
        definition = """
        k : int32
        ---
        data : <blob@>
        """

    Trace.insert1({"k": 1, "data": noise})
    stored = list((tmp_path / "store").rglob("*"))
    files = [p for p in stored if p.is_file() and "_joinflow" not in p.parts]  # not gc's store registry
    assert len(files) == 1 and files[0].read_bytes() == packed
    assert np.array_equal(Trace.fetch1("data"), noise)
    conn.config["blob.compression"] = "fast"  # opt-in speed: the sample says incompressible, stored raw
    Trace.insert1({"k": 2, "data": noise})
    files = {p.read_bytes()[:4] for p in (tmp_path / "store").rglob("*")
             if p.is_file() and "_joinflow" not in p.parts}
    assert files == {b"ZL12", b"mYm\0"}  # the second copy is raw: a different hash
    assert np.array_equal((Trace & {"k": 2}).fetch1("data"), noise)
    with pytest.raises(dj.DataJointError, match="blob.compression"):
        conn.config["blob.compression"] = "zstd"


def test_empty_row_names_required_attributes(schema):
    Simple = declare_simple(schema)
    with pytest.raises(dj.DataJointError, match="Cannot insert empty row.*`id`, `value` require values"):
        Simple.insert1({})
    assert len(Simple()) == 0
