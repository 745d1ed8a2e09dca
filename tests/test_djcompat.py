"""DataJoint 2.x pipelines that joinflow must run as DataJoint does (issue 21): Schema.jobs,
Computed/Imported tables with primary-key attributes of their own, key sources keyed by a
secondary attribute, Lookup.contents as a property, legacy ``_make_tuples``.  Every backend."""

import uuid

import pytest
import sqlalchemy as sa

import joinflow as dj
from joinflow import errors


def _source(schema):
    @schema
    class Animal(dj.Lookup):
        definition = """
        animal_id : int32
        """
        contents = [(1,), (2,), (3,)]

    return Animal


def _trials(schema, Animal, fail_on=()):  # noqa: N803 (the name the definition refers to)
    """A table whose make() inserts several rows per key: trial_id is its own key attribute."""

    @schema
    class Trial(dj.Imported):
        definition = """
        -> Animal
        trial_id : int32
        ---
        value : float64
        """

        def make(self, key):
            if key["animal_id"] in fail_on:
                raise ValueError(f"no file for animal {key['animal_id']}")
            self.insert({**key, "trial_id": t, "value": key["animal_id"] * 10.0 + t} for t in range(4))

    return Trial


def test_schema_jobs_lists_the_job_tables_of_computed_tables(schema):
    Animal = _source(schema)

    @schema
    class Count(dj.Computed):
        definition = """
        -> Animal
        ---
        n : int32
        """

        def make(self, key):
            self.insert1({**key, "n": key["animal_id"]})

    @schema
    class Other(dj.Computed):
        definition = """
        -> Animal
        """

        def make(self, key):
            self.insert1(key)

    assert schema.jobs == []  # no job table yet: populate() without reserve_jobs makes none
    Count.populate(reserve_jobs=True)
    jobs = schema.jobs
    assert [j.table_name for j in jobs] == ["~~count"]
    assert jobs[0].target.full_table_name == Count.full_table_name
    Count.jobs.error({"animal_id": 2}, "boom")
    assert len(schema.jobs[0]) == 1
    for job in schema.jobs:  # DataJoint's test fixtures clean up this way
        job.delete()
    assert len(Count.jobs) == 0 and len(Count()) == 3  # the target's rows are untouched


def test_table_with_own_key_attributes_populates(schema, connection):
    connection.config["jobs.add_job_metadata"] = True  # the hidden _job_* columns of every row of a key
    Animal = _source(schema)
    Trial = _trials(schema, Animal)
    assert Trial.progress() == (3, 3)  # one job per animal, not per trial
    result = Trial.populate()
    assert result == {"success_count": 3, "error_list": []}
    assert len(Trial()) == 12
    assert Trial.progress() == (0, 3)
    assert Trial.populate()["success_count"] == 0  # nothing made twice
    assert len(Trial()) == 12
    tc = Trial()._table_clause(["trial_id", "_job_start_time", "_job_duration"])
    rows = connection.execute(sa.select(*tc.c)).fetchall()
    assert len(rows) == 12 and all(r[1] is not None and r[2] is not None for r in rows)


@pytest.mark.parametrize("keep_completed", [False, True])
def test_table_with_own_key_attributes_populates_with_jobs(schema, connection, keep_completed):
    connection.config["jobs.keep_completed"] = keep_completed
    connection.config["jobs.allow_new_pk_fields_in_computed_tables"] = True  # as DataJoint's fixtures set it
    Animal = _source(schema)
    Trial = _trials(schema, Animal, fail_on={2})
    result = Trial.populate(reserve_jobs=True, suppress_errors=True)
    assert result["success_count"] == 2
    assert [key for key, _ in result["error_list"]] == [{"animal_id": 2}]
    jobs = Trial.jobs
    assert list(jobs.primary_key) == ["animal_id"]  # keyed by the key source, as DataJoint's job tables
    assert jobs.errors.keys() == [{"animal_id": 2}]
    assert len(Trial()) == 8 and len(Trial & {"animal_id": 2}) == 0  # the failed key left nothing
    assert jobs.progress()["success"] == (2 if keep_completed else 0)
    assert Trial.populate(reserve_jobs=True)["success_count"] == 0  # the error job is not retried silently
    jobs.errors.delete()
    with pytest.raises(ValueError, match="no file for animal 2"):
        Trial.populate(reserve_jobs=True)
    assert len(Trial()) == 8


def test_own_key_attributes_refused_with_the_strict_setting(schema, connection):
    Animal = _source(schema)
    connection.config["jobs.allow_new_pk_fields_in_computed_tables"] = False
    with pytest.raises(errors.DataJointError, match="allow_new_pk_fields_in_computed_tables"):
        _trials(schema, Animal)
    assert "__trial" not in schema.list_tables() and "_trial" not in schema.list_tables()


def test_key_source_keyed_by_a_secondary_attribute(schema):
    """DataJoint's schema_uuid.Item: the key source is the parent of a secondary foreign key."""

    @schema
    class Topic(dj.Manual):
        definition = """
        topic_id : uuid
        ---
        topic : varchar(40)
        """

    @schema
    class Item(dj.Computed):
        definition = """
        item_id : uuid
        ---
        -> Topic
        word : varchar(40)
        """
        key_source = Topic  # a class, not an instance

        def make(self, key):
            for word in ("a", "b"):
                self.insert1({**key, "word": word, "item_id": uuid.uuid5(key["topic_id"], word)})

    topics = [{"topic_id": uuid.uuid5(uuid.NAMESPACE_DNS, t), "topic": t} for t in ("x", "y")]
    Topic.insert(topics)
    assert Item.populate()["success_count"] == 2
    assert len(Item()) == 4 and Item.progress() == (0, 2)
    Topic.insert1({"topic_id": uuid.uuid5(uuid.NAMESPACE_DNS, "z"), "topic": "z"})
    assert Item.progress() == (1, 3)  # the new topic is pending (DataJoint 2.3.5 reports it and skips it)
    assert Item.populate(reserve_jobs=True)["success_count"] == 1
    assert len(Item()) == 6 and Item.progress() == (0, 3)
    assert list(Item.jobs.primary_key) == ["topic_id"]


def test_key_source_beyond_the_table_is_refused(schema):
    Animal = _source(schema)

    @schema
    class Site(dj.Lookup):
        definition = """
        site_id : int32
        """
        contents = [(1,)]

    @schema
    class Weight(dj.Computed):
        definition = """
        -> Animal
        ---
        w : float64
        """

        @property
        def key_source(self):
            return Animal * Site  # site_id is no attribute of Weight

        def make(self, key):
            self.insert1({"animal_id": key["animal_id"], "w": 1.0})

    for reserve_jobs in (False, True):
        with pytest.raises(errors.DataJointError, match=r"Weight.*site_id.*lacks"):
            Weight.populate(reserve_jobs=reserve_jobs)
    assert len(Weight()) == 0


def test_lookup_contents_as_a_property(schema):
    @schema
    class Color(dj.Lookup):
        definition = """
        color : varchar(12)
        """

        @property
        def contents(self):
            yield from ([c] for c in ("red", "green", "blue"))

    assert sorted(Color.to_dicts(), key=lambda r: r["color"]) == [
        {"color": "blue"}, {"color": "green"}, {"color": "red"}]


def test_legacy_make_tuples_is_called(schema):
    Animal = _source(schema)

    @schema
    class Legacy(dj.Computed):
        definition = """
        -> Animal
        ---
        twice : int32
        """

        def _make_tuples(self, key):
            self.insert1({**key, "twice": 2 * key["animal_id"]})

    assert Legacy.populate()["success_count"] == 3
    assert sorted(Legacy.to_arrays("twice")) == [2, 4, 6]
    Animal.insert1({"animal_id": 4})
    assert Legacy.populate(reserve_jobs=True)["success_count"] == 1
    assert len(Legacy & {"twice": 8}) == 1


def test_table_with_own_key_attributes_populates_with_worker_processes(schema):
    Animal = _source(schema)
    Trial = _trials(schema, Animal)
    result = Trial.populate(processes=2)
    assert result["success_count"] == 3 and result["error_list"] == []
    assert len(Trial()) == 12 and Trial.progress() == (0, 3)
    assert len(Trial.jobs) == 0  # the made keys' job rows are gone


def test_long_error_stack_without_spaces_is_recorded(schema):
    """DataJoint's test_long_error_stack: a 90 kB stack of letters (masking secrets in it took
    quadratic time: minutes, blocking the worker)."""
    import random
    import string

    Animal = _source(schema)
    Trial = _trials(schema, Animal)
    stack = "".join(random.choice(string.ascii_letters) for _ in range(89942))
    Trial.jobs.refresh()
    key = Trial.jobs.pending.keys(limit=1)[0]
    assert Trial.jobs.reserve(key)
    Trial.jobs.error(key, "error message", stack)
    assert Trial.jobs.errors.fetch1("error_stack") == stack.encode()


def test_delete_prompt_without_an_answer_leaves_no_transaction(schema, connection, monkeypatch):
    """DataJoint's suite deletes with safemode on under pytest, where input() raises: the
    deletes must be rolled back and the connection left out of the transaction."""
    Animal = _source(schema)

    def no_terminal(prompt=""):
        raise OSError("reading from stdin while output is captured")

    monkeypatch.setattr("builtins.input", no_terminal)
    with pytest.raises(OSError):
        (Animal & {"animal_id": 1}).delete(prompt=True)
    assert not connection.in_transaction
    assert len(Animal()) == 3
    (Animal & {"animal_id": 1}).delete(prompt=False)  # the connection is usable
    assert len(Animal()) == 2


def test_job_table_of_a_uuid_key_keeps_the_uuid_type(schema):
    """DataJoint's test_jobs_table_uuid_fk_derived_pk (#1515): the job table of a table keyed by a
    uuid is declared with uuid, and its heading names the declared type as original_type."""

    @schema
    class Basic(dj.Manual):
        definition = """
        item : uuid
        """

    @schema
    class BasicComputed(dj.Computed):
        definition = """
        -> Basic
        ---
        value : int32
        """

        def make(self, key):
            self.insert1({**key, "value": 1})

    assert "item : uuid" in BasicComputed.jobs.definition
    Basic.insert1({"item": uuid.uuid4()})
    assert BasicComputed.jobs.refresh()["added"] == 1
    assert BasicComputed.jobs.heading["item"].original_type == "uuid"
    assert BasicComputed.populate(reserve_jobs=True)["success_count"] == 1
