"""Row provenance (DataJoint 2.3.4+): hidden ``_prov`` on Manual tables, filled at insert.

Every test runs on SQLite, PostgreSQL and MySQL/MariaDB.
"""

from __future__ import annotations

import json
import warnings

import pytest
import sqlalchemy as sa

import joinflow as dj
from joinflow.autopopulate import job_version
from joinflow.deploy import add_prov_column
from joinflow.errors import DataJointError
from joinflow.settings import Config

SUBJECT = """
subject_id : int32
---
species = '' : varchar(30)
"""


def _raw_prov(table) -> dict:
    """{primary key value: the stored _prov (parsed) or None}, read past the hidden heading."""
    conn = table.connection
    tc = conn.backend.table_clause(table.database, table.table_name, ["subject_id", "_prov"])
    rows = conn.execute(sa.select(tc.c.subject_id, tc.c._prov)).fetchall()
    return {k: (json.loads(v) if isinstance(v, (str, bytes)) else v) for k, v in rows}


def _columns(table) -> list[str]:
    conn = table.connection
    return [c.name for c in conn.backend.load_columns(conn, table.database, table.table_name)[0]]


def _subject(schema, name="Subject"):
    cls = type(name, (dj.Manual,), {"definition": SUBJECT})
    return schema(cls)


def test_capture_off_declares_no_column_and_stores_nothing(schema, test_config):
    assert test_config["provenance.capture"] is False
    Subject = _subject(schema)
    assert "_prov" not in _columns(Subject)
    Subject.insert1(dict(subject_id=1, species="mouse"))
    assert Subject.to_dicts() == [dict(subject_id=1, species="mouse")]


def test_capture_on_declares_hidden_column_and_records_each_insert(schema, test_config, connection):
    test_config["provenance.capture"] = True
    test_config["provenance.source"] = {"system": "lims", "site": "lab-1"}
    Subject = _subject(schema)

    @schema
    class Rig(dj.Lookup):  # only Manual tables get the slot
        definition = "rig : varchar(8)"

    assert "_prov" in _columns(Subject) and "_prov" not in _columns(Rig)
    assert "_prov" not in Subject.heading.names and "_prov" in Subject.heading.all_attributes
    Subject.insert1(dict(subject_id=1, species="mouse"))
    Subject.insert([(2, "rat"), (3, "rat")])  # positional rows: heading order, _prov not expected
    assert Subject.to_dicts(order_by="subject_id") == [
        dict(subject_id=1, species="mouse"), dict(subject_id=2, species="rat"), dict(subject_id=3, species="rat")]
    assert "_prov" not in (Subject & "subject_id=1").fetch1()

    prov = _raw_prov(Subject)
    url = connection.url
    for record in prov.values():
        assert record["source"] == {"system": "lims", "site": "lab-1"}
        assert record["time"].endswith("+00:00")  # ISO-8601, UTC
        agent = {k: v for k, v in {"user": url.username, "host": url.host,
                                   "database_name": url.database}.items() if v}
        assert record["agent"] == agent
        assert "context" not in record  # not inside a make()
        assert "version" not in record  # jobs.version_method is None: no version to record
    assert prov[2] == prov[3]  # one record per insert call


def test_user_cannot_write_prov_and_version_follows_jobs_setting(schema, test_config):
    test_config["provenance.capture"] = True
    Subject = _subject(schema)
    with pytest.raises(DataJointError, match="_prov"):
        Subject.insert1(dict(subject_id=1, _prov={"forged": True}))
    test_config["jobs.version_method"] = "git"
    expected = job_version(test_config)
    Subject.insert1(dict(subject_id=2))
    record = _raw_prov(Subject)[2]
    if expected:
        assert record["version"] == expected
    else:  # not a git checkout here: no version to record
        assert "version" not in record


def test_insert_inside_make_records_table_key_and_run_id(schema, test_config, monkeypatch):
    test_config["provenance.capture"] = True
    monkeypatch.setenv("JOINFLOW_RUN_ID", "airflow-run-42")

    @schema
    class Upload(dj.Manual):
        definition = """
        upload_id : int32
        """

    Subject = _subject(schema)

    @schema
    class Ingest(dj.Imported):
        definition = """
        -> Upload
        ---
        n : int32
        """

        def make(self, key):  # a "fat ingestion" make: it fans rows out into a Manual table
            Subject.insert1(dict(subject_id=key["upload_id"] * 10, species="from upload"))
            self.insert1(dict(key, n=1))

    Upload.insert1(dict(upload_id=7))
    Subject.insert1(dict(subject_id=1))  # outside a make(): run id only
    Ingest.populate()
    prov = _raw_prov(Subject)
    assert prov[70]["context"] == {"table": Ingest.full_table_name, "key": {"upload_id": 7},
                                   "run_id": "airflow-run-42"}
    assert prov[1]["context"] == {"run_id": "airflow-run-42"}
    assert "_prov" not in _columns(Ingest)  # computed/imported tables: provenance is the foreign keys


def test_insert_from_query_copies_source_prov(schema, test_config):
    test_config["provenance.capture"] = True
    test_config["provenance.source"] = {"system": "first"}
    Subject = _subject(schema)
    Subject.insert([dict(subject_id=1), dict(subject_id=2)])
    original = _raw_prov(Subject)

    test_config["provenance.source"] = {"system": "second"}
    Copy = _subject(schema, "SubjectCopy")
    Copy.insert(Subject & "subject_id = 1")
    Copy.insert(Subject, skip_duplicates=True)
    assert _raw_prov(Copy) == original  # the source's record, not a new one

    test_config["provenance.capture"] = False
    Plain = _subject(schema, "PlainSubject")  # declared without _prov: the copy leaves it alone
    Plain.insert(Subject)
    assert "_prov" not in _columns(Plain) and len(Plain()) == 2

    test_config["provenance.capture"] = True
    Back = _subject(schema, "BackSubject")
    Back.insert(Plain)  # the source has no _prov: nothing to copy
    assert _raw_prov(Back) == {1: None, 2: None}


def test_add_prov_column_dry_run_then_apply(schema, test_config):
    Subject = _subject(schema)  # capture off at declaration: no column

    @schema
    class Rig(dj.Lookup):
        definition = "rig : varchar(8)"

    Subject.insert1(dict(subject_id=1))
    dry = add_prov_column(schema)  # dry_run=True by default
    assert dry["tables_analyzed"] == 1 and dry["tables_modified"] == 0 and dry["columns_added"] == 0
    assert dry["ddl"] and any("_prov" in sql for sql in dry["ddl"])
    assert dry["details"] == [{"table": Subject.full_table_name, "status": "pending"}]
    assert "_prov" not in _columns(Subject)

    test_config["provenance.capture"] = True
    Subject.insert1(dict(subject_id=2))  # capture on, but no column: nothing is written, no error
    assert "_prov" not in _columns(Subject)

    done = dj.deploy.add_prov_column(Subject, dry_run=False)
    assert done["tables_modified"] == 1 and done["columns_added"] == 1
    assert done["details"] == [{"table": Subject.full_table_name, "status": "added"}]
    assert "_prov" in _columns(Subject) and "_prov" not in _columns(Rig)
    assert "_prov" not in Subject.heading.names

    Subject.insert1(dict(subject_id=3))  # this process sees the new column at once
    prov = _raw_prov(Subject)
    assert prov[1] is None and prov[2] is None  # provenance is never invented for old rows
    assert prov[3]["agent"] or prov[3]["time"]
    assert Subject.to_dicts(order_by="subject_id")[2] == dict(subject_id=3, species="")

    again = add_prov_column(schema, dry_run=False)  # idempotent
    assert again["tables_modified"] == 0 and again["ddl"] == []
    assert again["details"] == [{"table": Subject.full_table_name, "status": "already_present"}]


def test_add_prov_column_rejects_bad_target():
    with pytest.raises(DataJointError, match="Schema or a Table"):
        add_prov_column("lab.subject")


def test_provenance_settings(monkeypatch):
    monkeypatch.setenv("DJ_PROVENANCE_CAPTURE", "true")
    monkeypatch.setenv("DJ_PROVENANCE_SOURCE", '{"system": "lims"}')
    cfg = Config(search_file=False)
    assert cfg["provenance.capture"] is True
    assert cfg.provenance.source == {"system": "lims"}
    assert Config(load_environment=False, search_file=False)["provenance.capture"] is False
    with pytest.raises(DataJointError, match="provenance.source"):
        cfg["provenance.source"] = ["not", "a", "dict"]
    with pytest.raises(DataJointError, match="JSON-serializable"):
        cfg["provenance.source"] = {"bad": object()}
    assert cfg.provenance.source == {"system": "lims"}  # a refused value changes nothing
    monkeypatch.setenv("DJ_PROVENANCE_SOURCE", "[1, 2")
    bad = Config(search_file=False)  # a malformed environment variable is reported at first use
    with pytest.raises(DataJointError, match="DJ_PROVENANCE_SOURCE"):
        bad["provenance.source"]


# -- DataJoint 2.3.5 on the same database ----------------------------------------------------------
djd = None
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    try:
        import datajoint as djd  # noqa: F811
        from test_datajoint_interop import dj_conn  # noqa: F401 - DataJoint's connection, as a fixture
    except ImportError:  # pragma: no cover
        djd = None


@pytest.mark.filterwarnings("ignore:MariaDB is not officially supported:UserWarning")
@pytest.mark.parametrize("dj_capture", [False, True])
def test_datajoint_declared_tables(request, backend, connection, schema_names, test_config, dj_capture):
    """A table DataJoint declared without ``_prov`` is left alone; one it declared with
    ``_prov`` is filled by joinflow's inserts in the same JSON shape."""
    if djd is None or backend == "sqlite":
        pytest.skip("DataJoint 2.3.5 runs on PostgreSQL and MySQL only")
    dj_connection = request.getfixturevalue("dj_conn")
    saved = djd.config["provenance.capture"]
    try:
        djd.config["provenance.capture"] = dj_capture
        name = schema_names()
        dschema = djd.Schema(name, connection=dj_connection)
        dschema(type("Subject", (djd.Manual,), {"definition": SUBJECT}))
    finally:
        djd.config["provenance.capture"] = saved

    test_config["provenance.capture"] = True
    Subject = dj.VirtualModule("m", name, connection=connection).Subject
    Subject.insert1(dict(subject_id=1, species="mouse"))
    assert Subject.to_dicts() == [dict(subject_id=1, species="mouse")]
    if not dj_capture:
        assert "_prov" not in _columns(Subject)
    else:
        assert "_prov" not in Subject.heading.names
        record = _raw_prov(Subject)[1]
        assert set(record) <= {"time", "agent", "version", "source", "context"} and "agent" in record
