"""Interoperability with DataJoint 2.3.5: each library opens the database the other wrote.

Every test runs on PostgreSQL and MySQL/MariaDB (DataJoint has no SQLite backend).  One
library declares the example pipeline and writes rows; the other opens the same schema
(virtual module, ``make_classes``, or the same class definitions bound to its own Schema),
reads the rows, writes its own, describes the tables and cascade-deletes.  Further tests
compare what the two libraries leave in the catalog for identical definitions: the
``~lineage`` rows, the ``:type:comment`` column comments, the column types and the keys.

DataJoint keeps a process-wide config and a singleton connection; the ``dj_conn`` fixture
points them at the test server and puts the previous settings back afterwards.
"""

from __future__ import annotations

import datetime
import decimal
import uuid
import warnings

import pytest
from sqlalchemy.engine import make_url

import joinflow as dj
from conftest import backend_url

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # "No datajoint.json found" is raised on import
    djd = pytest.importorskip("datajoint")
    from datajoint import instance as djd_instance

pytestmark = [
    pytest.mark.backend,
    pytest.mark.filterwarnings("ignore:MariaDB is not officially supported:UserWarning"),
    pytest.mark.filterwarnings("ignore:Native type:UserWarning"),
    # DataJoint inserts Lookup contents given as tuples (as in the example) with this warning
    pytest.mark.filterwarnings("ignore:Positional inserts:DeprecationWarning"),
]

# --------------------------------------------------------------------------------------------
# the pipeline, written once and declared by either library
# --------------------------------------------------------------------------------------------
RIG = """
rig_id : varchar(8)
"""

SUBJECT = """
# experimental subject
subject_id : varchar(16)
---
sex = 'U' : enum('F', 'M', 'U')
dob = null : date
"""

SESSION = """
-> Subject
session_idx : int16
---
started : datetime
-> [nullable] Rig.proj(rig='rig_id')
notes = '' : varchar(1024)   # free text
unique index (started)
"""

TRIAL = """
-> master
trial : int32
---
outcome : bool
"""

MEASUREMENT = """
# one attribute of every core type
-> Subject
m_id : int32
---
i8 = 0 : int8
i16 : int16   # a 16-bit integer
i32 : int32
i64 : int64
f32 : float32
f64 = 1.5 : float64
flag = 1 : bool
amount : decimal(8,3)
code : char(4)
label = "x" : varchar(32)
kind : enum('cat', 'dog')
day : date
stamp : datetime(3)
meta = null : json
raw = null : bytes
"""

UUID_LINE = "uid = null : uuid   # only on MySQL: DataJoint's uuid is broken on PostgreSQL\n"

# more declarations, only compared at the catalog level
ANIMAL = """
# an animal: with 'quotes'
animal_id : int32   # the animal's id
---
kind : enum('dog','cat')
weight = null : decimal(5)
born = CURRENT_TIMESTAMP : datetime(6)
tag = "a'b" : varchar(10)  # tag: with colon
index (kind, weight)
"""

KIND = """
kind_name : varchar(8)
---
-> [unique] Animal
"""

ALIAS = """
-> master
alias : char(3)
"""

VISIT = """
-> Animal
visit_idx : int16
---
visited : datetime(3)
-> Animal.proj(buddy='animal_id')
"""

STAT = """
-> Visit
---
n : int64
"""

IMP = """
-> Animal
---
v = 0 : float32
"""

SINGLE = """
# global settings
---
setting = 'x' : varchar(32)
"""

PET = """
pet_id : int32
---
coat : enum('black', 'white')
coat2 = 'white' : enum('white', 'black')   # the same values in another order
"""

BOOL_ATTRS = {"outcome", "flag"}
TABLE_CLASSES = ("Rig", "Subject", "Session", "Trial", "Measurement")
SQL_NAMES = {"Rig": "#rig", "Subject": "subject", "Session": "session", "Trial": "session__trial",
             "Measurement": "measurement"}

# attributes each table declares itself (not inherited through a foreign key)
LOCAL_ATTRS = {
    "#rig": ["rig_id"],
    "subject": ["subject_id", "sex", "dob"],
    "session": ["session_idx", "started", "notes"],
    "session__trial": ["trial", "outcome"],
    "measurement": ["m_id", "i8", "i16", "i32", "i64", "f32", "f64", "flag", "amount", "code",
                    "label", "kind", "day", "stamp", "meta", "raw"],
    "animal": ["animal_id", "kind", "weight", "born", "tag"],
    "#kind": ["kind_name"],
    "#kind__alias": ["alias"],
    "visit": ["visit_idx", "visited"],
    "__stat": ["n"],
    "_imp": ["v"],
    "single": ["setting", "_singleton"],
}


def measurement_definition(backend: str) -> str:
    return MEASUREMENT + (UUID_LINE if backend == "mysql" else "")


def declare_pipeline(lib, schema, backend: str) -> dict:
    """Declare (or bind to) the pipeline with ``lib`` (joinflow or datajoint) and ``schema``."""

    @schema
    class Rig(lib.Lookup):
        definition = RIG
        contents = [("A",), ("B",)]

    @schema
    class Subject(lib.Manual):
        definition = SUBJECT

    @schema
    class Session(lib.Manual):
        definition = SESSION

        class Trial(lib.Part):
            definition = TRIAL

    @schema
    class Measurement(lib.Manual):
        definition = measurement_definition(backend)

    return tables_of(
        {"Rig": Rig, "Subject": Subject, "Session": Session, "Measurement": Measurement}
    )


def declare_more(lib, schema) -> None:
    """Declare the other tiers and definition features with ``lib`` and ``schema``."""

    @schema
    class Animal(lib.Manual):
        definition = ANIMAL

    @schema
    class Kind(lib.Lookup):
        definition = KIND

        class Alias(lib.Part):
            definition = ALIAS

    @schema
    class Visit(lib.Manual):
        definition = VISIT

    @schema
    class Stat(lib.Computed):
        definition = STAT

        def make(self, key):  # pragma: no cover - never populated here
            raise NotImplementedError

    @schema
    class Imp(lib.Imported):
        definition = IMP

        def make(self, key):  # pragma: no cover - never populated here
            raise NotImplementedError

    @schema
    class Single(lib.Manual):
        definition = SINGLE


def tables_of(namespace) -> dict:
    """Name -> table class for the five tables, from a dict or a (virtual) module."""
    get = namespace.get if isinstance(namespace, dict) else lambda n: getattr(namespace, n, None)
    found = {name: get(name) for name in ("Rig", "Subject", "Session", "Measurement")}
    missing = [n for n, cls in found.items() if cls is None]
    assert not missing, f"no class made for {missing}"
    found["Trial"] = found["Session"].Trial
    return found


# --------------------------------------------------------------------------------------------
# rows
# --------------------------------------------------------------------------------------------
def _dt(*args) -> datetime.datetime:
    return datetime.datetime(*args)


def rows_for(writer: str, backend: str) -> dict[str, list[dict]]:
    """Complete rows (every attribute given) that ``writer`` ("first"/"second") inserts."""
    first = writer == "first"
    s_a, s_b = ("s1", "s2") if first else ("s4", "s5")
    day = 1 if first else 11
    subjects = [
        {"subject_id": s_a, "sex": "F", "dob": datetime.date(2020, 1, 2)},
        {"subject_id": s_b, "sex": "M", "dob": None},
    ]
    sessions = [
        {"subject_id": s_a, "session_idx": 1, "started": _dt(2024, 1, day, 10, 0, 0),
         "rig": "A", "notes": "first session, ünïcode"},
        {"subject_id": s_a, "session_idx": 2, "started": _dt(2024, 1, day + 1, 10, 0, 0),
         "rig": None, "notes": ""},
        {"subject_id": s_b, "session_idx": 1, "started": _dt(2024, 1, day + 2, 9, 30, 15),
         "rig": "B", "notes": "it's \"quoted\" \\ back"},
    ]
    trials = [
        {"subject_id": s["subject_id"], "session_idx": s["session_idx"], "trial": t,
         "outcome": t % 2 == 0}
        for s in sessions
        for t in range(3)
    ]
    measurements = [
        {"subject_id": s_a, "m_id": 1, "i8": -128, "i16": -32768, "i32": 2147483647,
         "i64": 2**62 + 7, "f32": 0.25, "f64": 3.141592653589793, "flag": True,
         "amount": decimal.Decimal("-12.345"), "code": "abcd", "label": "hello wörld",
         "kind": "dog", "day": datetime.date(2024, 2, 29),
         "stamp": _dt(2024, 1, 2, 3, 4, 5, 678000),
         "meta": {"a": [1, 2.5, {"b": None}], "c": "ü", "d": True}, "raw": b"\x00\x01\xff raw"},
        {"subject_id": s_b, "m_id": 2, "i8": 127, "i16": 32767, "i32": -2147483648, "i64": -(2**63),
         "f32": -1.5, "f64": -2.5e-300, "flag": False, "amount": decimal.Decimal("99999.999"),
         "code": "wxyz", "label": "", "kind": "cat", "day": datetime.date(1999, 12, 31),
         "stamp": _dt(1999, 12, 31, 23, 59, 59, 1000), "meta": [1, "two", None], "raw": b""},
    ]
    if backend == "mysql":
        measurements[0]["uid"] = uuid.UUID("6b1e0a6e-8f73-4c47-9c8e-3d1b5c2a7f10" if first else
                                           "0f6d2c4e-5a7b-4d3c-8e9f-a0b1c2d3e4f5")
        measurements[1]["uid"] = None
    return {"Subject": subjects, "Session": sessions, "Trial": trials, "Measurement": measurements}


def default_rows_for(writer: str, backend: str) -> dict[str, tuple[dict, dict]]:
    """(row as inserted, row as stored) pairs that rely on declared defaults."""
    sid = "s3" if writer == "first" else "s6"
    subject = ({"subject_id": sid}, {"subject_id": sid, "sex": "U", "dob": None})
    given = {"subject_id": sid, "m_id": 3, "i16": 5, "i32": 6, "i64": 7, "f32": 8.0,
             "amount": decimal.Decimal("0.500"), "code": "dflt", "kind": "cat",
             "day": datetime.date(2001, 1, 1), "stamp": _dt(2001, 1, 1, 0, 0, 0, 5000)}
    stored = {**given, "i8": 0, "f64": 1.5, "flag": True, "label": "x", "meta": None, "raw": None}
    if backend == "mysql":
        stored["uid"] = None
    return {"Subject": subject, "Measurement": (given, stored)}


def write_rows(tables: dict, writer: str, backend: str) -> dict[str, list[dict]]:
    """Insert the writer's rows with either library; return every row expected to be stored."""
    rows = rows_for(writer, backend)
    defaults = default_rows_for(writer, backend)
    expected = {name: [dict(r) for r in rows_] for name, rows_ in rows.items()}
    tables["Subject"].insert(rows["Subject"])
    tables["Subject"].insert1(defaults["Subject"][0])
    expected["Subject"].append(defaults["Subject"][1])
    tables["Session"].insert(rows["Session"])
    tables["Trial"].insert(rows["Trial"])
    tables["Measurement"].insert(rows["Measurement"])
    tables["Measurement"].insert1(defaults["Measurement"][0])
    expected["Measurement"].append(defaults["Measurement"][1])
    expected["Rig"] = [{"rig_id": "A"}, {"rig_id": "B"}]
    return expected


def merge(*expectations: dict) -> dict[str, list[dict]]:
    merged: dict[str, list[dict]] = {}
    for exp in expectations:
        for name, rows in exp.items():
            known = merged.setdefault(name, [])
            known.extend(r for r in rows if r not in known)
    return merged


# --------------------------------------------------------------------------------------------
# reading and normalising
# --------------------------------------------------------------------------------------------
def _canon_value(name: str, value):
    """Undo DataJoint's known fetch quirks so both libraries' results compare equal."""
    if value is None:
        return None
    if hasattr(value, "item") and type(value).__module__ == "numpy":
        value = value.item()
    if isinstance(value, (memoryview, bytearray)):  # DataJoint on PostgreSQL: bytea -> memoryview
        value = bytes(value)
    if name in BOOL_ATTRS and isinstance(value, int):  # DataJoint on MariaDB: bool -> 0/1
        value = bool(value)
    return value


def canon(rows, key: list[str]) -> list[dict]:
    """Rows with quirks normalised, sorted by primary key, each value tagged with its type."""
    out = []
    for row in rows:
        out.append({k: (type(v).__name__, v) for k, v in
                    ((k, _canon_value(k, v)) for k, v in dict(row).items())})
    return sorted(out, key=lambda r: tuple(r[k][1] for k in key))


PRIMARY_KEYS = {
    "Rig": ["rig_id"],
    "Subject": ["subject_id"],
    "Session": ["subject_id", "session_idx"],
    "Trial": ["subject_id", "session_idx", "trial"],
    "Measurement": ["subject_id", "m_id"],
}


def read_all(tables: dict) -> dict[str, list[dict]]:
    return {name: canon(tables[name]().to_dicts(), PRIMARY_KEYS[name]) for name in TABLE_CLASSES}


def expected_all(expected: dict) -> dict[str, list[dict]]:
    return {name: canon(expected.get(name, []), PRIMARY_KEYS[name]) for name in TABLE_CLASSES}


def assert_same_rows(got: dict, want: dict) -> None:
    for name in TABLE_CLASSES:
        assert got[name] == want[name], f"table {name}: rows differ"


# --------------------------------------------------------------------------------------------
# catalog snapshots (raw SQL through the joinflow connection)
# --------------------------------------------------------------------------------------------
def _text(value):
    if isinstance(value, bytes):
        return value.decode()
    return None if value is None else str(value)


def column_catalog(connection, schema: str) -> dict[tuple[str, str], dict]:
    """(table, column) -> native type, nullability, default and comment, schema name masked."""

    def mask(value):
        return None if value is None else _text(value).replace(schema, "<S>")

    if connection.backend.name == "mysql":
        sql = ("SELECT table_name, column_name, column_type, is_nullable = 'YES', column_default, "
               "column_comment FROM information_schema.columns WHERE table_schema = :s "
               "ORDER BY table_name, ordinal_position")
    else:
        sql = ("SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod), "
               "NOT a.attnotnull, pg_get_expr(d.adbin, d.adrelid), "
               "col_description(c.oid, a.attnum) "
               "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
               "JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped "
               "LEFT JOIN pg_attrdef d ON d.adrelid = c.oid AND d.adnum = a.attnum "
               "WHERE n.nspname = :s AND c.relkind = 'r' ORDER BY c.relname, a.attnum")
    result = {}
    for table, column, ctype, nullable, default, comment in connection.query(sql, {"s": schema}):
        result[(_text(table), _text(column))] = {
            "type": mask(ctype), "nullable": bool(nullable), "default": mask(default),
            "comment": _text(comment) or "",
        }
    return result


def table_comments(connection, schema: str) -> dict[str, str]:
    if connection.backend.name == "mysql":
        sql = ("SELECT table_name, table_comment FROM information_schema.tables "
               "WHERE table_schema = :s")
    else:
        sql = ("SELECT c.relname, obj_description(c.oid, 'pg_class') FROM pg_class c "
               "JOIN pg_namespace n ON n.oid = c.relnamespace "
               "WHERE n.nspname = :s AND c.relkind = 'r'")
    return {_text(t): _text(c) or "" for t, c in connection.query(sql, {"s": schema})}


def index_catalog(connection, schema: str) -> set[tuple]:
    """Every index of the schema (the primary keys included), schema name masked."""
    if connection.backend.name == "mysql":
        sql = ("SELECT table_name, index_name, non_unique, "
               "group_concat(column_name ORDER BY seq_in_index) "
               "FROM information_schema.statistics WHERE table_schema = :s "
               "GROUP BY table_name, index_name, non_unique")
        rows = connection.query(sql, {"s": schema})
        return {(_text(t), _text(i), int(nu), _text(cols)) for t, i, nu, cols in rows}
    sql = "SELECT tablename, indexname, indexdef FROM pg_indexes WHERE schemaname = :s"
    rows = connection.query(sql, {"s": schema})
    return {(_text(t), _text(i), _text(d).replace(schema, "<S>")) for t, i, d in rows}


def foreign_key_catalog(connection, schema: str) -> set[tuple]:
    """(child table, child columns, parent table, parent columns, on update, on delete)."""
    if connection.backend.name == "mysql":
        sql = ("SELECT k.table_name, group_concat(k.column_name ORDER BY k.ordinal_position), "
               "k.referenced_table_name, "
               "group_concat(k.referenced_column_name ORDER BY k.ordinal_position), "
               "r.update_rule, r.delete_rule FROM information_schema.key_column_usage k "
               "JOIN information_schema.referential_constraints r "
               "ON r.constraint_schema = k.constraint_schema "
               "AND r.constraint_name = k.constraint_name AND r.table_name = k.table_name "
               "WHERE k.table_schema = :s AND k.referenced_table_name IS NOT NULL "
               "GROUP BY k.table_name, k.constraint_name, k.referenced_table_name, "
               "r.update_rule, r.delete_rule")
    else:
        sql = ("SELECT cc.relname, string_agg(ca.attname, ',' ORDER BY k.ord), pc.relname, "
               "string_agg(pa.attname, ',' ORDER BY k.ord), con.confupdtype, con.confdeltype "
               "FROM pg_constraint con JOIN pg_class cc ON cc.oid = con.conrelid "
               "JOIN pg_namespace n ON n.oid = cc.relnamespace "
               "JOIN pg_class pc ON pc.oid = con.confrelid "
               "CROSS JOIN LATERAL unnest(con.conkey, con.confkey) "
               "WITH ORDINALITY AS k(ck, pk, ord) "
               "JOIN pg_attribute ca ON ca.attrelid = con.conrelid AND ca.attnum = k.ck "
               "JOIN pg_attribute pa ON pa.attrelid = con.confrelid AND pa.attnum = k.pk "
               "WHERE con.contype = 'f' AND n.nspname = :s "
               "GROUP BY con.oid, cc.relname, pc.relname, con.confupdtype, con.confdeltype")
    return {tuple(_text(v) for v in row) for row in connection.query(sql, {"s": schema})}


def lineage_rows(connection, schema: str) -> set[tuple[str, str, str]]:
    full = connection.backend.full_table_name(schema, "~lineage")
    rows = connection.query(f"SELECT table_name, attribute_name, lineage FROM {full}")
    return {(_text(t), _text(a), _text(lin).replace(schema, "<S>", 1)) for t, a, lin in rows}


def catalog_snapshot(connection, schema: str) -> dict:
    return {
        "columns": column_catalog(connection, schema),
        "tables": table_comments(connection, schema),
        "indexes": index_catalog(connection, schema),
        "foreign_keys": foreign_key_catalog(connection, schema),
        "lineage": lineage_rows(connection, schema),
    }


# --------------------------------------------------------------------------------------------
# fixtures
# --------------------------------------------------------------------------------------------
@pytest.fixture(params=["postgresql", "mysql"])
def backend(request) -> str:
    """Overrides conftest's backend: DataJoint has no SQLite backend."""
    return request.param


DJ_KEYS = ("database.backend", "database.host", "database.port", "database.user",
           "database.password", "database.name", "database.use_tls", "safemode")


@pytest.fixture
def dj_conn(backend, tmp_path, schema_names):
    """DataJoint's global config and singleton connection, pointed at this backend's server.

    Depends on ``schema_names`` so the DataJoint connection is closed before the schemas
    are dropped.  The previous config values and singleton are restored afterwards.
    """
    url = make_url(backend_url(backend, tmp_path))
    pg = backend == "postgresql"
    settings = {
        "database.backend": backend,
        "database.host": url.host or "127.0.0.1",
        "database.port": url.port or (5432 if pg else 3306),
        "database.user": url.username or ("postgres" if pg else "root"),
        "database.password": url.password or "",
        "database.name": (url.database or "postgres") if pg else None,
        "database.use_tls": False,
        "safemode": False,
    }
    saved = {key: djd.config[key] for key in DJ_KEYS}
    saved_connection = djd_instance._singleton_connection
    connection = None
    try:
        for key, value in settings.items():
            djd.config[key] = value
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            connection = djd.conn(reset=True)
        yield connection
    finally:
        if connection is not None:
            try:
                connection.close()
            except Exception:  # pragma: no cover - cleanup must not hide the test's result
                pass
        for key in DJ_KEYS:
            djd.config[key] = saved[key]
        djd_instance._singleton_connection = saved_connection


@pytest.fixture
def jf_pipeline(backend, connection, schema_names):
    """The pipeline declared and filled by joinflow: (schema name, tables, expected rows)."""
    name = schema_names()
    tables = declare_pipeline(dj, dj.Schema(name, connection=connection), backend)
    expected = write_rows(tables, "first", backend)
    return name, tables, expected


@pytest.fixture
def djd_pipeline(backend, dj_conn, schema_names):
    """The pipeline declared and filled by DataJoint: (schema name, tables, expected rows)."""
    name = schema_names()
    tables = declare_pipeline(djd, djd.Schema(name, connection=dj_conn), backend)
    expected = write_rows(tables, "first", backend)
    return name, tables, expected


def dj_virtual_module(name: str, dj_conn):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return djd.VirtualModule(f"vm_{name}", name, connection=dj_conn)


# --------------------------------------------------------------------------------------------
# 1. joinflow writes, DataJoint reads, writes, describes and deletes
# --------------------------------------------------------------------------------------------
def test_joinflow_reads_back_its_own_rows(jf_pipeline):
    """Sanity check for the expectations used below."""
    _name, tables, expected = jf_pipeline
    assert_same_rows(read_all(tables), expected_all(expected))


def test_datajoint_virtual_module_reads_joinflow_rows(jf_pipeline, dj_conn):
    name, jf_tables, expected = jf_pipeline
    module = dj_virtual_module(name, dj_conn)
    dj_tables = tables_of(module)
    assert_same_rows(read_all(dj_tables), expected_all(expected))
    assert_same_rows(read_all(dj_tables), read_all(jf_tables))
    assert issubclass(dj_tables["Rig"], djd.Lookup)
    assert issubclass(dj_tables["Subject"], djd.Manual)
    assert issubclass(dj_tables["Trial"], djd.Part)
    assert dj_tables["Session"].primary_key == ["subject_id", "session_idx"]
    assert dj_tables["Trial"].primary_key == ["subject_id", "session_idx", "trial"]


def test_datajoint_make_classes_reads_joinflow_rows(jf_pipeline, dj_conn, backend):
    name, jf_tables, expected = jf_pipeline
    schema = djd.Schema(name, connection=dj_conn, create_schema=False, create_tables=False)
    assert set(schema.list_tables()) == set(SQL_NAMES.values())
    namespace: dict = {}
    schema.make_classes(into=namespace)
    dj_tables = tables_of(namespace)
    assert_same_rows(read_all(dj_tables), expected_all(expected))
    # the heading DataJoint reconstructs from joinflow's catalog carries the declared core types
    heading = dj_tables["Measurement"].heading
    assert heading.attributes["i8"].original_type == "int8"
    assert heading.attributes["amount"].original_type == "decimal(8,3)"
    assert heading.attributes["stamp"].original_type == "datetime(3)"
    assert heading.attributes["meta"].json
    if backend == "mysql":
        assert heading.attributes["uid"].uuid


def test_datajoint_classes_bind_to_joinflow_tables_without_redeclaring(jf_pipeline, dj_conn,
                                                                        connection, backend):
    name, jf_tables, expected = jf_pipeline
    before = catalog_snapshot(connection, name)
    dj_tables = declare_pipeline(djd, djd.Schema(name, connection=dj_conn), backend)
    assert catalog_snapshot(connection, name) == before, "DataJoint changed joinflow's tables"
    assert_same_rows(read_all(dj_tables), expected_all(expected))
    assert len(dj_tables["Rig"]()) == 2  # Lookup contents are not inserted twice


def test_datajoint_inserts_into_joinflow_tables(jf_pipeline, dj_conn, connection, backend):
    name, jf_tables, expected = jf_pipeline
    dj_tables = declare_pipeline(djd, djd.Schema(name, connection=dj_conn), backend)
    written = write_rows(dj_tables, "second", backend)
    want = expected_all(merge(expected, written))
    assert_same_rows(read_all(jf_tables), want)
    # and through a joinflow virtual schema, which knows nothing of the class definitions
    assert_same_rows(read_all(tables_of(dj.virtual_schema(name, connection=connection))), want)
    # DataJoint's own view agrees
    assert_same_rows(read_all(dj_tables), want)


def test_datajoint_describes_joinflow_tables(jf_pipeline, dj_conn, schema_names, backend):
    name, _jf_tables, _expected = jf_pipeline
    reference = schema_names()
    declare_pipeline(djd, djd.Schema(reference, connection=dj_conn), backend)
    ours = tables_of(dj_virtual_module(name, dj_conn))
    theirs = tables_of(dj_virtual_module(reference, dj_conn))
    for table in TABLE_CLASSES:
        got = ours[table].describe(printout=False)
        got = got.replace(f"vm_{name}", "<M>").replace(name, "<S>")
        want = theirs[table].describe(printout=False)
        want = want.replace(f"vm_{reference}", "<M>").replace(reference, "<S>")
        assert got == want, f"DataJoint describes joinflow's {table} differently from its own"
    session = ours["Session"].describe(printout=False)
    assert "-> [nullable]" in session and "rig=\"rig_id\"" in session
    assert "# free text" in session
    assert "# experimental subject" in ours["Subject"].describe(printout=False)


def test_datajoint_cascade_delete_on_joinflow_tables(jf_pipeline, dj_conn, backend):
    name, jf_tables, expected = jf_pipeline
    dj_tables = tables_of(dj_virtual_module(name, dj_conn))
    (dj_tables["Subject"] & {"subject_id": "s1"}).delete()
    keep = {n: [r for r in rows if r.get("subject_id") != "s1"] for n, rows in expected.items()}
    assert_same_rows(read_all(jf_tables), expected_all(keep))
    # a restricted delete from the middle of the pipeline takes the session's trials with it
    (dj_tables["Session"] & {"subject_id": "s2", "session_idx": 1}).delete()
    keep = {n: [r for r in rows if n not in ("Session", "Trial") or r["subject_id"] != "s2"]
            for n, rows in keep.items()}
    assert_same_rows(read_all(jf_tables), expected_all(keep))
    assert len(jf_tables["Subject"]()) == 2 and len(jf_tables["Session"]()) == 0


# --------------------------------------------------------------------------------------------
# 2. DataJoint writes, joinflow reads, writes, describes and deletes
# --------------------------------------------------------------------------------------------
def test_datajoint_reads_back_its_own_rows(djd_pipeline):
    """Sanity check: the expectations hold for DataJoint itself (after the known quirks)."""
    _name, tables, expected = djd_pipeline
    assert_same_rows(read_all(tables), expected_all(expected))


def test_joinflow_virtual_schema_reads_datajoint_rows(djd_pipeline, connection, backend):
    name, dj_tables, expected = djd_pipeline
    module = dj.virtual_schema(name, connection=connection)
    jf_tables = tables_of(module)
    assert_same_rows(read_all(jf_tables), expected_all(expected))
    assert issubclass(jf_tables["Rig"], dj.Lookup)
    assert issubclass(jf_tables["Subject"], dj.Manual)
    assert issubclass(jf_tables["Trial"], dj.Part)
    assert jf_tables["Trial"].primary_key == ["subject_id", "session_idx", "trial"]
    heading = jf_tables["Measurement"]().heading
    assert heading["i8"].type == "int8" and heading["amount"].type == "decimal(8,3)"
    assert heading["stamp"].type == "datetime(3)" and heading["meta"].category == "json"
    assert heading["flag"].category == "bool" and heading["raw"].category == "bytes"
    if backend == "mysql":
        assert heading["uid"].category == "uuid"
    assert set(module.schema.list_tables()) == set(SQL_NAMES.values())


def test_joinflow_classes_bind_to_datajoint_tables_without_redeclaring(djd_pipeline, connection,
                                                                        backend):
    name, _dj_tables, expected = djd_pipeline
    before = catalog_snapshot(connection, name)
    jf_tables = declare_pipeline(dj, dj.Schema(name, connection=connection), backend)
    assert catalog_snapshot(connection, name) == before, "joinflow changed DataJoint's tables"
    assert_same_rows(read_all(jf_tables), expected_all(expected))
    assert len(jf_tables["Rig"]()) == 2


def test_joinflow_inserts_into_datajoint_tables(djd_pipeline, connection, dj_conn, backend):
    name, dj_tables, expected = djd_pipeline
    jf_tables = declare_pipeline(dj, dj.Schema(name, connection=connection), backend)
    written = write_rows(jf_tables, "second", backend)
    want = expected_all(merge(expected, written))
    assert_same_rows(read_all(dj_tables), want)
    assert_same_rows(read_all(tables_of(dj_virtual_module(name, dj_conn))), want)
    assert_same_rows(read_all(jf_tables), want)


def test_joinflow_describes_datajoint_tables(djd_pipeline, connection, schema_names, backend):
    name, _dj_tables, _expected = djd_pipeline
    reference = schema_names()
    declare_pipeline(dj, dj.Schema(reference, connection=connection), backend)
    theirs = tables_of(dj.virtual_schema(name, connection=connection))
    ours = tables_of(dj.virtual_schema(reference, connection=connection))
    for table in TABLE_CLASSES:
        got = theirs[table]().describe().replace(name, "<S>")
        want = ours[table]().describe().replace(reference, "<S>")
        assert got == want, f"joinflow describes DataJoint's {table} differently from its own"
    session = theirs["Session"]().describe().splitlines()
    assert session == [
        "-> Subject",
        "session_idx : int16",
        "---",
        "started : datetime",
        "-> [nullable] Rig.proj(rig='rig_id')",
        "notes = '' : varchar(1024)  # free text",
        "unique index (started)",
    ]
    subject = theirs["Subject"]().describe().splitlines()
    assert subject[0] == "# experimental subject"
    assert "sex = 'U' : enum('F', 'M', 'U')" in subject and "dob = null : date" in subject


def test_joinflow_cascade_delete_on_datajoint_tables(djd_pipeline, connection, backend):
    name, dj_tables, expected = djd_pipeline
    jf_tables = tables_of(dj.virtual_schema(name, connection=connection))
    deleted = (jf_tables["Subject"] & {"subject_id": "s1"}).delete()
    assert deleted == 1
    keep = {n: [r for r in rows if r.get("subject_id") != "s1"] for n, rows in expected.items()}
    assert_same_rows(read_all(dj_tables), expected_all(keep))
    (jf_tables["Session"] & {"subject_id": "s2", "session_idx": 1}).delete()
    keep = {n: [r for r in rows if n not in ("Session", "Trial") or r["subject_id"] != "s2"]
            for n, rows in keep.items()}
    assert_same_rows(read_all(dj_tables), expected_all(keep))
    assert len(dj_tables["Session"]()) == 0 and len(dj_tables["Session"].Trial()) == 0


# --------------------------------------------------------------------------------------------
# 3./4. identical definitions leave identical catalogs
# --------------------------------------------------------------------------------------------
@pytest.fixture
def both_declared(backend, connection, dj_conn, schema_names):
    """The same tables declared by joinflow (first name) and by DataJoint (second name)."""
    jf_name, dj_name = schema_names(), schema_names()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Native type 'decimal(5)'" from both libraries
        jf_schema = dj.Schema(jf_name, connection=connection)
        declare_pipeline(dj, jf_schema, backend)
        declare_more(dj, jf_schema)
        dj_schema = djd.Schema(dj_name, connection=dj_conn)
        declare_pipeline(djd, dj_schema, backend)
        declare_more(djd, dj_schema)
    return jf_name, dj_name


def test_virtual_modules_make_the_same_classes(both_declared, connection, dj_conn):
    jf_name, dj_name = both_declared

    def classes(module):
        found = {}
        for name, cls in vars(module).items():
            if isinstance(cls, type) and hasattr(cls, "definition") and name[:1].isupper():
                tier = next(b.__name__ for b in cls.__mro__ if b.__name__ in
                            ("Manual", "Lookup", "Imported", "Computed"))
                parts = sorted(n for n, p in vars(cls).items()
                               if isinstance(p, type) and n[:1].isupper())
                found[name] = (tier, parts)
        return found

    reference = classes(dj_virtual_module(dj_name, dj_conn))
    assert reference["Stat"] == ("Computed", []) and reference["Kind"] == ("Lookup", ["Alias"])
    assert classes(dj_virtual_module(jf_name, dj_conn)) == reference
    assert classes(dj.virtual_schema(jf_name, connection=connection)) == reference
    assert classes(dj.virtual_schema(dj_name, connection=connection)) == reference


def test_lineage_rows_match_datajoint(both_declared, connection):
    jf_name, dj_name = both_declared
    ours, theirs = lineage_rows(connection, jf_name), lineage_rows(connection, dj_name)
    assert ours == theirs
    assert ("session", "rig", "<S>.#rig.rig_id") in ours  # a renamed foreign key keeps its origin
    assert ("session__trial", "session_idx", "<S>.session.session_idx") in ours
    assert ("visit", "buddy", "<S>.animal.animal_id") in ours
    assert ("single", "_singleton", "<S>.single._singleton") in ours
    assert not any(attr == "notes" for _t, attr, _l in ours)  # none for plain secondary attrs


def test_lineage_table_structure_matches_datajoint(both_declared, connection):
    jf_name, dj_name = both_declared

    def strip(cols):
        return {k: {f: v for f, v in c.items() if f != "comment"}
                for k, c in cols.items() if k[0] == "~lineage"}

    ours = strip(column_catalog(connection, jf_name))
    theirs = strip(column_catalog(connection, dj_name))
    assert ours and ours == theirs


def test_local_column_comments_match_datajoint(both_declared, connection, backend):
    jf_name, dj_name = both_declared
    ours, theirs = column_catalog(connection, jf_name), column_catalog(connection, dj_name)
    differ = {}
    for table, attrs in LOCAL_ATTRS.items():
        for attr in attrs + (["uid"] if table == "measurement" and backend == "mysql" else []):
            mine, reference = ours[(table, attr)]["comment"], theirs[(table, attr)]["comment"]
            if mine != reference:
                differ[(table, attr)] = (mine, reference)
    assert not differ, f"column comments (joinflow, DataJoint) differ: {differ}"
    assert ours[("session", "notes")]["comment"] == ":varchar(1024):free text"
    assert ours[("subject", "sex")]["comment"] == ":enum('F', 'M', 'U'):"
    assert ours[("measurement", "i16")]["comment"] == ":int16:a 16-bit integer"
    assert ours[("measurement", "stamp")]["comment"] == ":datetime(3):"
    mine, dj_tables = table_comments(connection, jf_name), table_comments(connection, dj_name)
    assert {t: c for t, c in mine.items() if not t.startswith("~")} == \
        {t: c for t, c in dj_tables.items() if not t.startswith("~")}
    assert mine["subject"] == "experimental subject"


def test_inherited_column_comments_keep_the_core_type(both_declared, connection, backend):
    """A deliberate difference (docs/differences-from-datajoint.md): a column inherited through a
    foreign key keeps its parent's ``:type:`` marker, which DataJoint drops (PG: no comment at all;
    MySQL: the parent's text only).  The user text after the marker is what DataJoint writes."""
    jf_name, dj_name = both_declared
    ours, theirs = column_catalog(connection, jf_name), column_catalog(connection, dj_name)
    assert set(ours) == set(theirs)
    for key, col in ours.items():
        table = key[0] if isinstance(key, tuple) else key
        if str(table).startswith("~"):
            continue  # ~lineage: DataJoint comments it on MySQL only; joinflow on both
        mine, dj_comment = col["comment"] or "", theirs[key]["comment"] or ""
        if mine == dj_comment:
            continue
        assert mine.startswith(":") and mine.count(":") >= 2, (key, mine, dj_comment)
        text = mine.split(":", 2)[2]
        assert dj_comment in ("", text) or dj_comment.endswith(text), (key, mine, dj_comment)


def test_column_types_and_defaults_match_datajoint(both_declared, connection):
    jf_name, dj_name = both_declared
    ours, theirs = column_catalog(connection, jf_name), column_catalog(connection, dj_name)
    assert set(ours) == set(theirs)

    def shape(col):
        default = col["default"]
        if default is not None and default.upper().startswith("NULL"):
            default = None  # an explicit DEFAULT NULL is the same as none
        return col["type"], col["nullable"], default

    differ = {k: (shape(ours[k]), shape(theirs[k])) for k in ours
              if shape(ours[k]) != shape(theirs[k])}
    assert not differ, f"column (type, nullable, default) of (joinflow, DataJoint) differ: {differ}"


def test_keys_and_indexes_match_datajoint(both_declared, connection):
    jf_name, dj_name = both_declared
    assert foreign_key_catalog(connection, jf_name) == foreign_key_catalog(connection, dj_name)
    ours, theirs = index_catalog(connection, jf_name), index_catalog(connection, dj_name)
    assert ours == theirs, \
        f"indexes only in joinflow: {ours - theirs}; only in DataJoint: {theirs - ours}"


def test_enum_columns_sharing_their_values(backend, connection, dj_conn, schema_names):
    """Two enums with the same values share one PostgreSQL type (see dj-layout.md §4)."""
    jf_name, dj_name = schema_names(), schema_names()

    def declare(lib, schema):
        @schema
        class Pet(lib.Manual):
            definition = PET

        return Pet

    dj_pet = declare(djd, djd.Schema(dj_name, connection=dj_conn))
    jf_pet = declare(dj, dj.Schema(jf_name, connection=connection))
    def pet_columns(name):
        return {k: v for k, v in column_catalog(connection, name).items() if k[0] == "pet"}

    assert pet_columns(jf_name) == pet_columns(dj_name)
    rows = [{"pet_id": 1, "coat": "black", "coat2": "white"},
            {"pet_id": 2, "coat": "white", "coat2": "black"}]
    jf_pet.insert(rows[:1])
    dj_pet.insert(rows[:1])
    djd_view = tables_of_one(dj_virtual_module(jf_name, dj_conn), "Pet")
    jf_view = tables_of_one(dj.virtual_schema(dj_name, connection=connection), "Pet")
    djd_view.insert(rows[1:])
    jf_view.insert(rows[1:])
    assert sorted(jf_pet().to_dicts(), key=lambda r: r["pet_id"]) == rows
    assert sorted(dj_pet().to_dicts(), key=lambda r: r["pet_id"]) == rows


def tables_of_one(module, name):
    cls = getattr(module, name, None)
    assert cls is not None, f"no class {name} in {module}"
    return cls
