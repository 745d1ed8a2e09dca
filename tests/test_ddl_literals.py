"""Text that goes into DDL (defaults, enum members, comments) is data, never SQL.

A default is one of a small grammar (a quoted string, a number, null, true/false,
CURRENT_TIMESTAMP[(p)], and ON UPDATE CURRENT_TIMESTAMP where the backend has it); anything
else is refused, naming the table and the attribute, with nothing created or dropped. Every
literal goes through one quoting function per backend: quotes, backslashes, ``%``, comment
markers and unicode read back exactly; NUL is refused the same way on every backend.
"""

from __future__ import annotations

import pytest

import joinflow as dj
from joinflow import testing
from joinflow.copy import copy_schemas
from joinflow.errors import DataJointError, DeclarationError

# strings that break a naive quoting of SQL literals (standard, MySQL's backslash escapes,
# driver parameter markers, comment markers, multi-byte characters)
TRICKY = [
    "it's \"quoted\" ''",
    "C:\\new\\table",
    "ends with a backslash \\",
    "\\'; DROP TABLE canary; --",
    "100% -- not /* a */ # comment",
    "a :colon: %(p)s %s {x} ?",
    "ünïcødé ✓ 日本語 Ω",
]


def sql_quoted(text: str) -> str:
    """``text`` as a quoted string of the definition language."""
    return "'" + text.replace("'", "''") + "'"


def tricky_definition() -> str:
    lines = ["# table: " + " | ".join(TRICKY), "id : int32", "---"]
    for i, text in enumerate(TRICKY):
        lines.append(f"d{i} = {sql_quoted(text)} : varchar(60)  # {text}")
        lines.append(f"e{i} = 'plain' : enum('plain', {sql_quoted(text)})  # enum {text}")
    return "\n".join(lines)


def tables_of(connection, schema_name) -> set[str]:
    return set(connection.backend.list_tables(connection, schema_name))


def assert_reads_back_exactly(table) -> None:
    heading = table.heading
    assert heading.table_comment == "table: " + " | ".join(TRICKY)
    for i, text in enumerate(TRICKY):
        assert heading[f"d{i}"].comment == text
        assert heading[f"e{i}"].comment == f"enum {text}"
        assert heading[f"e{i}"].typeinfo.enum_values == ("plain", text)
    table.insert1({"id": 1})  # every default from the server / the heading
    table.insert1({"id": 2, **{f"e{i}": text for i, text in enumerate(TRICKY)}})
    rows = {r["id"]: r for r in table.to_dicts()}
    for i, text in enumerate(TRICKY):
        assert rows[1][f"d{i}"] == text, (i, rows[1][f"d{i}"])
        assert rows[1][f"e{i}"] == "plain"
        assert rows[2][f"e{i}"] == text
    # a row inserted with None takes the default as the heading read it back from the catalog
    table.insert1({"id": 3, **{f"d{i}": None for i in range(len(TRICKY))}})
    row = (table & {"id": 3}).fetch1()
    assert [row[f"d{i}"] for i in range(len(TRICKY))] == TRICKY


def test_defaults_enum_members_and_comments_read_back_exactly(schema, connection, schema_name):
    @schema
    class Tricky(dj.Manual):
        definition = tricky_definition()

    assert_reads_back_exactly(Tricky())
    # describe() (what `joinflow copy` declares from) declares the same table again
    described = Tricky.describe()

    @schema
    class Again(dj.Manual):
        definition = described

    assert_reads_back_exactly(Again())
    assert Again.describe() == described


@pytest.fixture
def canary(schema):
    @schema
    class Canary(dj.Manual):
        definition = """
        canary_id : int32
        ---
        song : varchar(20)
        """

    Canary.insert1({"canary_id": 1, "song": "tweet"})
    return Canary


def crafted_definitions(connection, schema_name, canary) -> list[str]:
    # unquoted names: PostgreSQL folds them to lower case, as the old upper-casing of the default did not
    full, other = f"{schema_name}.{canary.table_name}", f"{schema_name}.evil"
    return [
        # the example: DDL after the default ran on PostgreSQL and dropped the canary
        f"v = CURRENT_TIMESTAMP) ; DROP TABLE {full} ; CREATE TABLE {other} (crafted_id int : varchar(40)",
        # an extra column through the default (MySQL)
        "v = CURRENT_TIMESTAMP, injected int : datetime",
        "v = CURRENT_TIMESTAMP(3) ON UPDATE CURRENT_TIMESTAMP(3), injected int : datetime(3)",
        # a string followed by SQL; and MySQL's backslash escape closing the string early
        "v = 'a', injected int DEFAULT 'b' : varchar(40)",
        "v = '\\', injected int, w varchar(3) DEFAULT ' : varchar(40)",
        "v = '\\' : varchar(40)",  # reaches the server as '\\' on MySQL: fine only if quoted there
        # an extra column through the enum members (MySQL spelled the type as written)
        "v : enum('a'), injected int, w enum('b')",
        # expressions and words that are not literals
        "v = now() : datetime",
        "v = 1 + 1 : int32",
        "v = (SELECT 1) : int32",
        "v = unquoted words : varchar(40)",
        "v = 'a' 'b' : varchar(40)",
        "v = 'unterminated : varchar(40)",
        "v = CURRENT_TIMESTAMP : varchar(40)",  # CURRENT_TIMESTAMP is a default of datetime attributes
    ]


def test_crafted_defaults_are_refused_and_change_nothing(schema, connection, schema_name, canary):
    before = tables_of(connection, schema_name)
    refused = 0
    for line in crafted_definitions(connection, schema_name, canary):
        if line == "v = '\\' : varchar(40)":  # a literal backslash: a legal default, stored exactly
            continue

        class Crafted(dj.Manual):
            definition = f"crafted_id : int32\n---\n{line}"

        with pytest.raises(DeclarationError) as info:
            schema(Crafted)
        message = str(info.value)
        # named: the attribute, or the whole line where the line itself cannot be split into its parts
        assert ("`v`" in message or line in message) and "crafted" in message, (line, message)
        refused += 1
        assert tables_of(connection, schema_name) == before, line
        assert canary.to_dicts() == [{"canary_id": 1, "song": "tweet"}], line
        assert "injected" not in canary.heading.names
    assert refused == 13


def test_an_unquoted_word_default_is_text_as_in_datajoint(schema):
    """DataJoint quotes `= pending` as the text 'pending'; a pipeline that relies on it keeps working."""

    class Task(dj.Manual):
        definition = """
        task_id : int32
        ---
        state = pending : varchar(20)
        label = v1.2-rc_3 : varchar(20)
        """

    schema(Task)
    assert Task.heading["state"].default is not None
    Task.insert1({"task_id": 1})
    assert Task.fetch1() == {"task_id": 1, "state": "pending", "label": "v1.2-rc_3"}


def test_a_backslash_default_is_a_literal(schema):
    @schema
    class Path(dj.Manual):
        definition = r"""
        path_id : int32
        ---
        p = 'C:\new\table' : varchar(40)
        q = '\' : varchar(4)
        r = "a\""" : varchar(8)
        """

    Path.insert1({"path_id": 1})
    assert Path.fetch1() == {"path_id": 1, "p": "C:\\new\\table", "q": "\\", "r": 'a\\"'}


def test_nul_is_refused_the_same_way_everywhere(schema, connection, schema_name):
    before = tables_of(connection, schema_name)
    cases = {
        "default": "v = 'a\x00b' : varchar(8)",
        "enum member": "v : enum('a', 'b\x00')",
        "comment": "v : int32  # a\x00b",
    }
    for what, line in cases.items():

        class Nul(dj.Manual):
            definition = f"nul_id : int32\n---\n{line}"

        with pytest.raises(DeclarationError) as info:
            schema(Nul)
        message = str(info.value)
        assert "`v`" in message and "NUL" in message and "nul" in message, (what, message)

    class NulComment(dj.Manual):
        definition = "# a\x00b\nnul_id : int32"

    with pytest.raises(DeclarationError, match="NUL"):
        schema(NulComment)
    assert tables_of(connection, schema_name) == before


def test_characters_beyond_the_bmp(schema, backend, connection, schema_name):
    """MySQL/MariaDB keep comments and defaults in their catalog as 3-byte UTF-8: a 4-byte
    character would come back as '?', so it is refused there; elsewhere it reads back."""
    definition = "emoji_id : int32\n---\nv = 'smile 🙂' : varchar(20)  # smile 🙂"

    class Emoji(dj.Manual):
        pass

    Emoji.definition = definition
    if backend == "mysql":
        with pytest.raises(DeclarationError) as info:
            schema(Emoji)
        assert "`v`" in str(info.value) and "🙂" in str(info.value)
        assert "emoji" not in tables_of(connection, schema_name)
        return
    schema(Emoji)
    Emoji.insert1({"emoji_id": 1})
    assert Emoji.fetch1("v") == "smile 🙂" and Emoji.heading["v"].comment == "smile 🙂"


def test_on_update_current_timestamp_only_where_the_backend_has_it(schema, backend, connection, schema_name):
    class Stamped(dj.Manual):
        definition = """
        stamped_id : int32
        ---
        changed = current_timestamp(3) on update current_timestamp(3) : datetime(3)
        """

    if backend != "mysql":
        with pytest.raises(DeclarationError) as info:
            schema(Stamped)
        assert "`changed`" in str(info.value) and "ON UPDATE" in str(info.value)
        assert "#stamped" not in tables_of(connection, schema_name)
        return
    schema(Stamped)
    assert Stamped.heading["changed"].default == "CURRENT_TIMESTAMP(3) ON UPDATE CURRENT_TIMESTAMP(3)"
    assert "ON UPDATE CURRENT_TIMESTAMP(3)" in Stamped.describe()


def test_alter_quotes_and_checks_defaults_comments_and_enums(schema, connection, schema_name, canary):
    @schema
    class Note(dj.Manual):
        definition = """
        # plain
        note_id : int32
        ---
        body = 'plain' : varchar(60)  # plain
        kind = 'plain' : enum('plain')  # plain
        """

    Note.insert1({"note_id": 1})
    text = TRICKY[1] + " " + TRICKY[3] + " " + TRICKY[4]
    Note.definition = f"""
        # {text}
        note_id : int32
        ---
        body = {sql_quoted(text)} : varchar(120)  # {text}
        kind = 'plain' : enum('plain', {sql_quoted(TRICKY[0])}, {sql_quoted(TRICKY[1])})  # {text}
        """
    Note.alter(prompt=False)
    heading = Note().heading
    assert heading.table_comment == text
    assert heading["body"].comment == text and heading["kind"].comment == text
    assert heading["kind"].typeinfo.enum_values == ("plain", TRICKY[0], TRICKY[1])
    Note.insert1({"note_id": 2, "kind": TRICKY[1]})
    assert (Note & {"note_id": 2}).fetch1("body", "kind") == (text, TRICKY[1])

    before = tables_of(connection, schema_name)
    rows = Note.to_dicts()
    for line in crafted_definitions(connection, schema_name, canary):
        if line == "v = '\\' : varchar(40)":
            continue
        Note.definition = f"note_id : int32\n---\nbody : varchar(120)\n{line}"
        with pytest.raises(DeclarationError) as info:
            Note.alter(prompt=False)
        assert "`v`" in str(info.value) or line in str(info.value), (line, str(info.value))
        assert tables_of(connection, schema_name) == before
        assert Note.to_dicts() == rows and "v" not in Note().heading.names
        assert canary.to_dicts() == [{"canary_id": 1, "song": "tweet"}]


NEXT = {"sqlite": "postgresql", "postgresql": "mysql", "mysql": "sqlite"}


def test_copy_rebuilds_the_literals_exactly(schema, backend, tmp_path):
    """`joinflow copy` declares the target from the source's catalog: PostgreSQL -> MySQL is
    the path where backslashes in defaults used to turn into escapes."""

    @schema
    class Tricky(dj.Manual):
        definition = tricky_definition()

    Tricky.insert1({"id": 10})
    (tmp_path / "target").mkdir()
    target_url = testing.database_url(NEXT[backend], tmp_path / "target")
    name = testing.unique_schema_name("cplit")
    try:
        copy_schemas({schema.database: name}, schema.connection, target_url, progress=False)
        cfg = dj.config.copy()
        cfg["safemode"] = False
        with dj.Connection(url=target_url, config=cfg) as conn:
            module = dj.virtual_schema(name, connection=conn)
            copied = module.Tricky()
            assert copied.describe() == Tricky.describe()
            assert (copied & {"id": 10}).fetch1() == (Tricky & {"id": 10}).fetch1()
            (copied & {"id": 10}).delete()
            assert_reads_back_exactly(copied)
    finally:
        testing.drop_schemas(target_url, [name])


def test_the_quoting_function_is_one_per_backend(connection):
    """Backend.ddl_literal is the one way a text becomes a DDL literal; it refuses NUL."""
    backend = connection.backend
    assert backend.ddl_literal("it's") == "'it''s'"
    with pytest.raises(DataJointError, match="NUL"):
        backend.ddl_literal("a\x00b", "the default of attribute `v`")
