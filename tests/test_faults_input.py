"""Bad input, fuzzed with hypothesis, on every backend.

- Definition strings (random text, and valid definitions mutated character by character or
  spliced with SQL fragments) either declare a table or raise a joinflow error
  (``joinflow.errors``); a failed declaration leaves no table behind.
- Inserted values and restriction dicts with quotes, NULs, unicode, huge strings, NaN, inf
  and out-of-range integers are rejected with a joinflow error (nothing inserted) or stored
  and fetched back exactly; they are never interpreted as SQL.

Example counts are small for CI; ``JF_FUZZ_EXAMPLES=2000`` (or
``python benchmarks/soak_fuzz.py``) runs the same properties longer.
"""

from __future__ import annotations

import math
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import joinflow as dj
from joinflow import errors

EXAMPLES = int(os.environ.get("JF_FUZZ_EXAMPLES", "40"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=not os.environ.get("JF_FUZZ_EXAMPLES"),
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                       HealthCheck.filter_too_much, HealthCheck.data_too_large])

# ---------------------------------------------------------------------------------------------
# definitions
# ---------------------------------------------------------------------------------------------

VALID = [
    """
    # a comment
    item_id : int32
    ---
    name : varchar(32)  # the name
    weight = 1.5 : float64
    note = null : varchar(255)
    """,
    """
    -> Parent
    trial : int16
    ---
    outcome : enum('hit', 'miss')
    started = CURRENT_TIMESTAMP : datetime
    index (outcome)
    """,
    """
    code : char(4)
    ---
    -> [nullable] Parent
    payload = null : <blob>
    flags : json
    unique index (flags)
    """,
]
SNIPPETS = ["'", '"', "`", ";", "--", "/*", "*/", "\\", "\x00", "\n", "#", ":", "=", "->", "---", "(", ")",
            "[", "]", ",", ".", " ", "é", "表", "\U0001f600", "DROP TABLE parent", "'; DROP TABLE parent; --",
            "null", "index", "unique", "int32", "varchar(", "enum(", "proj(", "Parent", "master", "9999999999"]


def mutate(text: str, edits: list[tuple[int, int, str]]) -> str:
    for kind, where, snippet in edits:
        pos = where % (len(text) + 1)
        if kind == 0:  # insert
            text = text[:pos] + snippet + text[pos:]
        elif kind == 1:  # delete a stretch
            text = text[:pos] + text[pos + len(snippet):]
        else:  # replace a stretch
            text = text[:pos] + snippet + text[pos + len(snippet):]
    return text


definition_text = st.one_of(
    st.lists(st.sampled_from(list("abcz019_:=#->()[],.'\"`; \n\t\x00é") + ["int32", "---", "varchar(8)", "\n"]),
             max_size=60).map("".join),
    st.builds(mutate, st.sampled_from(VALID),
              st.lists(st.tuples(st.integers(0, 2), st.integers(0, 400), st.sampled_from(SNIPPETS)),
                       min_size=1, max_size=4)),
)


@pytest.fixture
def parent(schema):
    @schema
    class Parent(dj.Manual):
        definition = """
        parent_id : int32
        ---
        label = "" : varchar(16)
        """

    Parent.insert1({"parent_id": 1, "label": "canary"})
    return Parent


@FUZZ
@given(text=definition_text)
def test_fuzzed_definitions_declare_or_raise_a_joinflow_error(schema, parent, text):
    before = set(schema.list_tables())
    cls = type("Fuzzed", (dj.Manual,), {"definition": text})
    try:
        schema(cls, context={"Parent": parent})
    except errors.DataJointError:
        assert set(schema.list_tables()) == before, f"a failed declaration left a table: {text!r}"
        assert not cls().is_declared
    else:  # a valid definition: the table works, then it goes again
        assert cls().is_declared
        cls().drop_quick()
    assert len(parent()) == 1 and parent.fetch1("label") == "canary"  # never executed as SQL


# ---------------------------------------------------------------------------------------------
# values and restrictions
# ---------------------------------------------------------------------------------------------

nasty_text = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["'", "''", "\"", "\\", "\\'", "'; DROP TABLE parent; --", "' OR '1'='1", "%", "_", "\x00",
                     "a\x00b", "é", "表", "\U0001f600", " trailing ", "", "NULL", "null", "None", "\r\n"]),
    st.text(min_size=60, max_size=300),  # longer than the column
)
nasty_float = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([0.0, -0.0, 1e308, 5e-324]))
nasty_int = st.one_of(st.integers(-(2 ** 70), 2 ** 70), st.sampled_from([-32769, -32768, 32767, 32768]))


@pytest.fixture
def thing(schema, parent):
    @schema
    class Thing(dj.Manual):
        definition = """
        thing_id : int32
        ---
        name : varchar(50)
        amount = null : float64
        small = null : int16
        """

    Thing.insert1({"thing_id": 0, "name": "canary", "amount": 1.0, "small": 1})
    return Thing


_ids = iter(range(1, 10 ** 9))


def _text_equal(backend: str, stored: str, given: str) -> bool:
    return stored == given


@FUZZ
@given(name=nasty_text, amount=nasty_float, small=nasty_int)
def test_fuzzed_values_are_stored_exactly_or_rejected(schema, backend, parent, thing, name, amount, small):
    row = {"thing_id": next(_ids), "name": name, "amount": amount, "small": small}
    count = len(thing())
    try:
        thing.insert1(row)
    except errors.DataJointError as exc:
        assert len(thing()) == count, f"a rejected row changed the table: {row!r}"
        assert str(exc)  # a message, naming what was wrong
    else:
        stored = (thing & {"thing_id": row["thing_id"]}).fetch1()
        assert stored["name"] == name, (stored["name"], name)
        if math.isnan(amount):
            assert stored["amount"] is None or math.isnan(stored["amount"])  # NaN is stored as NULL
        else:
            assert stored["amount"] == amount
        assert stored["small"] == small and -32768 <= small <= 32767
        assert len(thing()) == count + 1
    assert (thing & {"thing_id": 0}).fetch1("name") == "canary"
    assert parent.fetch1("label") == "canary"


@FUZZ
@given(name=nasty_text, key=st.one_of(st.sampled_from(["name", "thing_id", "amount"]), st.text(max_size=12)),
       number=nasty_int)
def test_fuzzed_restrictions_never_run_as_sql(schema, backend, parent, thing, name, key, number):
    thing.insert1({"thing_id": 5, "name": "O'Brien \"quoted\" \\ %_", "amount": None, "small": None},
                  skip_duplicates=True)
    for restriction in ({"name": name}, {key: name}, {"thing_id": number}, {key: number}):
        try:
            found = (thing & restriction).to_dicts()
        except errors.DataJointError:
            continue
        for row in found:  # every row returned really matches (no `OR 1=1` widening)
            for attr, value in restriction.items():
                if attr not in thing.heading.names:
                    continue  # unknown keys are ignored, as documented
                if isinstance(value, str) and backend == "mysql" and isinstance(row[attr], str):
                    assert row[attr].casefold().rstrip() == value.casefold().rstrip() or not value.isascii()
                elif isinstance(value, str) and not value.strip() and thing.heading[attr].category in ("int", "float"):
                    assert row[attr] is None  # a blank number means NULL, in inserts and restrictions alike
                else:
                    assert row[attr] == value, (restriction, row)
        if restriction == {"name": name} and name in ("canary", "O'Brien \"quoted\" \\ %_"):
            assert len(found) == 1
    assert len(thing()) == 2 and parent.fetch1("label") == "canary"


# ---------------------------------------------------------------------------------------------
# primary-key values in storage paths (<object@store>: schema-addressed paths embed the key)
# ---------------------------------------------------------------------------------------------

path_text = st.one_of(
    st.text(min_size=1, max_size=30),
    st.sampled_from(["..", "../..", "../../etc/passwd", "/", "/abs/path", "a/../../b", "\\..\\..", ".", "~",
                     "%2e%2e%2f", "..%2F..", "a\x00b", "CON", "x" * 200, "é/表", "\U0001f600"]),
)


@pytest.fixture
def object_table(schema, tmp_path):
    conn = schema.connection
    stores = dict(conn.config["stores"] or {})
    stores["objs"] = {"protocol": "file", "location": str(tmp_path / "root" / "store")}
    conn.config["stores"] = stores
    (tmp_path / "root" / "store").mkdir(parents=True)

    @schema
    class Document(dj.Manual):
        definition = """
        doc_name : varchar(255)
        ---
        body : <object@objs>
        """

    return Document, tmp_path / "root"


@FUZZ
@given(name=path_text)
def test_primary_key_values_never_escape_the_store_root(object_table, name):
    Document, outer = object_table
    store_root = outer / "store"
    payload = name.encode("utf-8", "surrogatepass") + b"!"
    try:
        Document.insert1({"doc_name": name, "body": payload}, skip_duplicates=True)
    except errors.DataJointError:
        pass
    else:
        for row in (Document & {"doc_name": name}).to_dicts():
            if row["doc_name"] == name:  # (MySQL compares case-insensitively: "A" finds "a")
                assert row["body"].read() == payload
    for folder, _, files in os.walk(outer):
        for file in files:
            path = os.path.realpath(os.path.join(folder, file))
            assert path.startswith(str(store_root.resolve()) + os.sep), f"{name!r} wrote outside the store: {path}"
