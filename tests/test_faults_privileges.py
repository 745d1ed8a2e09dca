"""A read-only database user (PostgreSQL, MySQL): queries work; every write path fails
with a clear permission error (an AccessError naming the table and saying it is a
permissions problem) and changes nothing.  The users are dropped afterwards.
"""

from __future__ import annotations

import uuid

import pytest
import sqlalchemy as sa

import joinflow as dj
from joinflow import errors
from lab import declare_pipeline

pytestmark = pytest.mark.parametrize("backend", ["postgresql", "mysql"], indirect=True)
PASSWORD = "jf-readonly-pw"


@pytest.fixture
def readonly_url(connection, schema):
    """A login that may only SELECT from the test schema; dropped afterwards."""
    user = f"jf_ro_{uuid.uuid4().hex[:8]}"
    name = schema.database
    url = connection.url
    if connection.dialect == "postgresql":
        statements = [f'CREATE ROLE "{user}" LOGIN PASSWORD \'{PASSWORD}\'',
                      f'GRANT USAGE ON SCHEMA "{name}" TO "{user}"',
                      f'GRANT SELECT ON ALL TABLES IN SCHEMA "{name}" TO "{user}"']
        cleanup = [f'DROP OWNED BY "{user}"', f'DROP ROLE IF EXISTS "{user}"']
    else:
        hosts = ["%", "localhost"]  # 'localhost' too, or an anonymous ''@localhost account would win
        statements = [f"CREATE USER '{user}'@'{h}' IDENTIFIED BY '{PASSWORD}'" for h in hosts]
        statements += [f"GRANT SELECT ON `{name}`.* TO '{user}'@'{h}'" for h in hosts]
        cleanup = [f"DROP USER IF EXISTS '{user}'@'{h}'" for h in hosts]
    made = []

    def make():
        for sql in statements:
            connection.execute(sa.text(sql))
        made.append(1)
        return url.set(username=user, password=PASSWORD).render_as_string(hide_password=False)

    yield make
    if made:
        for sql in cleanup:
            try:
                connection.execute(sa.text(sql))
            except errors.DataJointError as exc:  # pragma: no cover - report, keep cleaning
                print(f"cleanup failed: {sql}: {exc}")


def snapshot(*tables):
    return [sorted(map(lambda r: tuple(sorted(r.items())), t.to_dicts())) for t in tables]


def assert_permission_error(info, table_name: str):
    message = str(info.value)
    assert "permission" in message.lower(), message
    assert table_name in message, message


def test_readonly_user_can_query_but_not_write(schema, readonly_url, test_config):
    Source, Square = declare_pipeline(schema)
    Source.insert([{"source_id": i, "value": float(i)} for i in range(3)])
    Square.populate(max_calls=1)
    Square.jobs  # the job table exists, so that only privileges stand in the way
    before = snapshot(Source, Square, Square.Digit)
    jobs_before = len(Square.jobs)

    ro = dj.Connection(url=readonly_url(), config=test_config)
    try:
        ro_schema = dj.Schema(schema.database, connection=ro, create_schema=False)
        RoSource, RoSquare = declare_pipeline(ro_schema)
        # queries work
        assert len(RoSource()) == 3 and len(RoSquare * RoSource) == 1
        assert RoSource.to_arrays("value", order_by="source_id").tolist() == [0.0, 1.0, 2.0]
        assert RoSquare.progress() == (2, 3)
        # every write path fails clearly
        with pytest.raises(errors.AccessError) as info:
            RoSource.insert1({"source_id": 10, "value": 1.0})
        assert_permission_error(info, "source")
        with pytest.raises(errors.AccessError) as info:
            (RoSource & {"source_id": 2}).delete()
        assert_permission_error(info, "square__digit")  # the cascade starts at the leaves
        with pytest.raises(errors.AccessError) as info:
            RoSource.update1({"source_id": 1, "value": 5.0})
        assert_permission_error(info, "source")
        with pytest.raises(errors.AccessError) as info:
            RoSquare.populate(reserve_jobs=True)
        assert_permission_error(info, "square")
        with pytest.raises(errors.AccessError) as info:
            RoSquare.populate()
        assert_permission_error(info, "square")
        assert not ro.in_transaction

        class Extra(dj.Manual):
            definition = """
            extra_id : int32
            """

        with pytest.raises(errors.AccessError) as info:
            ro_schema(Extra)
        assert "permission" in str(info.value).lower() and schema.database in str(info.value)
    finally:
        ro.close()
    # nothing changed
    assert snapshot(Source, Square, Square.Digit) == before
    assert len(Square.jobs) == jobs_before
    assert "extra" not in schema.list_tables()
