"""Insert, fetch, delete (cascade, master/part), update1, drop, transactions — on every backend."""

import datetime

import numpy as np
import pandas as pd
import pytest

import joinflow as dj
from joinflow import errors

from lab import declare_lab, fill_lab


@pytest.fixture
def lab(schema):
    return declare_lab(schema)


def test_table_names_follow_datajoint_tiers(lab):
    assert lab.Rig.table_name == "#rig"
    assert lab.Subject.table_name == "subject"
    assert lab.Trial.table_name == "session__trial"
    assert lab.Trial.master is lab.Session
    assert lab.Session.primary_key == ["subject_id", "session_idx"]
    assert lab.Session.heading.secondary_attributes == ["started", "rig", "notes"]


def test_lookup_contents_inserted_once(schema, lab):
    assert len(lab.Rig()) == 2
    declare_lab(schema)  # re-decoration must not duplicate or fail
    assert sorted(r["rig_id"] for r in lab.Rig.to_dicts()) == ["A", "B"]


def test_insert_forms_dicts_tuples_numpy_pandas_query(lab):
    lab.Subject.insert([{"subject_id": "d1", "sex": "M"}])
    lab.Subject.insert([("t1", "F", None)])
    rec = np.array([("n1", "U", None)], dtype=[("subject_id", "O"), ("sex", "O"), ("dob", "O")])
    lab.Subject.insert(rec)
    lab.Subject.insert(pd.DataFrame({"subject_id": ["p1", "p2"], "sex": ["F", "M"]}))
    lab.Subject.insert1(rec[0].copy() if False else {"subject_id": "one"})
    assert len(lab.Subject()) == 6
    assert (lab.Subject & {"subject_id": "one"}).fetch1("sex") == "U"  # default applied
    assert (lab.Subject & {"subject_id": "t1"}).fetch1("dob") is None


def test_insert_from_query_and_skip_duplicates(schema, lab):
    fill_lab(lab)

    @schema
    class SubjectCopy(dj.Manual):
        definition = """
        subject_id : varchar(16)
        ---
        sex = 'U' : enum('F', 'M', 'U')
        """

    SubjectCopy.insert(lab.Subject.proj("sex"))
    assert len(SubjectCopy()) == 2
    SubjectCopy.insert(lab.Subject.proj("sex"), skip_duplicates=True)
    assert len(SubjectCopy()) == 2
    with pytest.raises(errors.DuplicateError):
        SubjectCopy.insert(lab.Subject.proj("sex"))


def test_skip_duplicates_and_replace(lab):
    lab.Subject.insert1({"subject_id": "s1", "sex": "F"})
    lab.Subject.insert([{"subject_id": "s1", "sex": "M"}, {"subject_id": "s2", "sex": "M"}], skip_duplicates=True)
    assert (lab.Subject & {"subject_id": "s1"}).fetch1("sex") == "F"
    assert len(lab.Subject()) == 2
    lab.Subject.insert1({"subject_id": "s1", "sex": "M", "dob": datetime.date(2020, 5, 1)}, replace=True)
    assert (lab.Subject & {"subject_id": "s1"}).fetch1("sex", "dob") == ("M", datetime.date(2020, 5, 1))


def test_replace_keeps_children(lab):
    fill_lab(lab)
    lab.Subject.insert1({"subject_id": "s1", "sex": "M"}, replace=True)
    assert len(lab.Session & {"subject_id": "s1"}) == 2  # an upsert, not delete + insert


def test_ignore_extra_fields(lab):
    with pytest.raises(KeyError, match="extra"):
        lab.Subject.insert1({"subject_id": "x", "extra": 1})
    lab.Subject.insert1({"subject_id": "x", "extra": 1}, ignore_extra_fields=True)
    assert lab.Subject.keys() == [{"subject_id": "x"}]


def test_fetch_api(lab):
    fill_lab(lab)
    s = lab.Session()
    dicts = s.to_dicts(order_by="KEY")
    assert [(d["subject_id"], d["session_idx"]) for d in dicts] == [("s1", 0), ("s1", 1), ("s2", 0), ("s2", 1)]
    assert isinstance(dicts[0]["started"], datetime.datetime)
    assert s.keys(order_by="KEY DESC", limit=1) == [{"subject_id": "s2", "session_idx": 1}]
    assert s.to_dicts(order_by="KEY", limit=2, offset=1)[0]["session_idx"] == 1
    arr = s.to_arrays()
    assert arr.dtype.names == ("subject_id", "session_idx", "started", "rig", "notes") and len(arr) == 4
    idx, rig = s.to_arrays("session_idx", "rig", order_by="KEY")
    assert list(idx) == [0, 1, 0, 1] and list(rig) == ["A", None, "A", None]
    keys, idx = s.to_arrays("session_idx", include_key=True, order_by="KEY")
    assert keys[0] == {"subject_id": "s1", "session_idx": 0}
    frame = s.to_pandas()
    assert list(frame.index.names) == ["subject_id", "session_idx"] and len(frame) == 4
    assert (s & {"subject_id": "s1", "session_idx": 1}).fetch1("rig") is None
    assert (s & {"subject_id": "s1", "session_idx": 1}).fetch1("KEY") == {"subject_id": "s1", "session_idx": 1}
    with pytest.raises(errors.DataJointError, match="exactly one"):
        (s & {"subject_id": "nobody"}).fetch1()
    with pytest.raises(errors.DataJointError, match="4 tuples"):
        s.fetch1()
    assert len(s) == 4 and bool(s) and not bool(s & {"subject_id": "nobody"})
    assert {"subject_id": "s1", "session_idx": 0} in s
    assert {"subject_id": "s1", "session_idx": 9} not in s
    assert [r["session_idx"] for r in s.head(3)] == [0, 1, 0]
    assert [r["session_idx"] for r in s.tail(1)] == [1]
    assert sum(1 for _ in s) == 4
    with pytest.warns(DeprecationWarning):
        assert len(s.fetch(as_dict=True)) == 4
    assert "Total: 4" in repr(s)
    with pytest.raises(TypeError):
        len(lab.Session)  # DataJoint: len() on the class is a TypeError


def test_restrictions(lab):
    fill_lab(lab)
    s = lab.Session()
    assert len(s & {"subject_id": "s1"}) == 2
    assert len(s & {"subject_id": "s1", "unknown_key": 3}) == 2  # unknown dict keys are ignored
    assert len(s & "session_idx = 1") == 2
    assert len(s - {"subject_id": "s1"}) == 2
    assert len(s & [{"subject_id": "s1", "session_idx": 0}, {"subject_id": "s2", "session_idx": 1}]) == 2
    assert len(s & []) == 0 and len(s & True) == 4 and len(s & False) == 0
    assert len(s & dj.AndList([{"subject_id": "s1"}, "session_idx = 0"])) == 1
    assert len(s & dj.Not({"subject_id": "s1"})) == 2
    assert len(s & {"rig": None}) == 2
    assert len(lab.Subject & (s & "session_idx = 1")) == 2
    assert len(lab.Subject - s) == 0
    assert len(lab.Trial & (s & {"subject_id": "s2"})) == 6
    joined = lab.Session * lab.Trial
    assert len(joined) == 12 and joined.primary_key == ["subject_id", "session_idx", "trial"]
    renamed = lab.Rig.proj(rig="rig_id")
    assert renamed.heading.names == ["rig"]
    assert len(s * renamed) == 2


def test_cascading_delete_across_part_and_children(lab):
    fill_lab(lab)
    assert (lab.Subject & {"subject_id": "s1"}).delete() == 1
    assert len(lab.Subject()) == 1 and len(lab.Session()) == 2 and len(lab.Trial()) == 6
    assert set(r["subject_id"] for r in lab.Trial.to_dicts()) == {"s2"}
    assert lab.Rig.delete() == 2  # the nullable FK from Session blocks nothing: sessions go too
    assert len(lab.Session & "rig IS NOT NULL") == 0


def test_delete_restricted_by_downstream_table(lab):
    fill_lab(lab)
    # the restriction reads Session, which the cascade deletes before Subject
    (lab.Subject & (lab.Session & "session_idx = 1")).delete()
    assert len(lab.Subject()) == 0 and len(lab.Session()) == 0


def test_part_integrity(lab):
    fill_lab(lab)
    with pytest.raises(errors.DataJointError, match="Part"):
        (lab.Trial & {"subject_id": "s1"}).delete()
    assert len(lab.Trial()) == 12
    (lab.Trial & {"subject_id": "s1", "session_idx": 0, "trial": 0}).delete(part_integrity="ignore")
    assert len(lab.Trial()) == 11 and len(lab.Session()) == 4
    (lab.Trial & {"subject_id": "s2", "session_idx": 1}).delete(part_integrity="cascade")
    assert len(lab.Session()) == 3 and len(lab.Trial & {"subject_id": "s2", "session_idx": 1}) == 0
    assert len(lab.Trial & {"subject_id": "s2", "session_idx": 0}) == 3


def test_delete_quick_and_safemode_prompt(lab, monkeypatch):
    fill_lab(lab)
    with pytest.raises(errors.IntegrityError):
        lab.Subject.delete_quick()  # children exist: no cascade
    answers = iter(["no"])
    monkeypatch.setattr("builtins.input", lambda prompt="": next(answers))
    assert lab.Subject.delete(prompt=True) == 0
    assert len(lab.Session()) == 4  # rolled back
    answers = iter(["yes"])
    assert (lab.Subject & {"subject_id": "s2"}).delete(prompt=True) == 1
    assert len(lab.Session()) == 2


def test_transaction_rolls_back_everything(lab):
    conn = lab.Subject.connection
    with pytest.raises(RuntimeError):
        with conn.transaction:
            lab.Subject.insert1({"subject_id": "t1"})
            lab.Session.insert1({"subject_id": "t1", "session_idx": 0, "started": "2024-01-01 00:00:00"})
            raise RuntimeError("boom")
    assert len(lab.Subject()) == 0 and len(lab.Session()) == 0
    assert not conn.in_transaction
    with conn.transaction:
        lab.Subject.insert1({"subject_id": "t2"})
        with pytest.raises(errors.DataJointError, match="Nested"):
            conn.start_transaction()
    assert len(lab.Subject()) == 1


def test_failed_batch_inserts_nothing(lab):
    rows = [{"subject_id": f"b{i}"} for i in range(5)] + [{"subject_id": "b0"}]
    with pytest.raises(errors.DuplicateError):
        lab.Subject.insert(rows)
    assert len(lab.Subject()) == 0


def test_update1(lab):
    fill_lab(lab)
    key = {"subject_id": "s1", "session_idx": 0}
    lab.Session.update1({**key, "notes": "ok", "rig": "B"})
    assert (lab.Session & key).fetch1("notes", "rig") == ("ok", "B")
    lab.Session.update1({**key, "rig": None, "notes": None})
    assert (lab.Session & key).fetch1("notes", "rig") == ("", None)
    with pytest.raises(errors.DataJointError, match="one existing entry"):
        lab.Session.update1({"subject_id": "s1", "session_idx": 9, "notes": "x"})
    with pytest.raises(errors.DataJointError, match="primary key"):
        lab.Session.update1({"subject_id": "s1", "notes": "x"})
    with pytest.raises(errors.DataJointError, match="unrestricted"):
        (lab.Session & key).update1({**key, "notes": "x"})


def test_drop_cascades_and_part_guard(schema, lab):
    fill_lab(lab)
    with pytest.raises(errors.DataJointError, match="Part"):
        lab.Trial.drop()
    lab.Subject.drop()
    assert not lab.Session.is_declared and not lab.Trial.is_declared and not lab.Subject.is_declared
    assert lab.Rig.is_declared
    assert schema.list_tables() == ["#rig"]


def test_dependencies_and_list_tables(schema, lab):
    names = schema.list_tables()
    assert names.index("subject") < names.index("session") < names.index("session__trial")
    assert set(lab.Session.parents()) == {lab.Subject.full_table_name, lab.Rig.full_table_name}
    assert lab.Session.parts() == [lab.Trial.full_table_name]
    assert lab.Trial.full_table_name in lab.Subject.descendants()
    assert lab.Subject.full_table_name in lab.Trial.ancestors()
    assert set(lab.Session.parents(primary=True)) == {lab.Subject.full_table_name}


def test_virtual_module_rebuilds_classes_from_database(connection, schema_name, lab):
    fill_lab(lab)
    vm = dj.VirtualModule("lab_vm", schema_name, connection=connection)
    assert issubclass(vm.Session, dj.Manual) and issubclass(vm.Rig, dj.Lookup)
    assert issubclass(vm.Session.Trial, dj.Part)
    assert len(vm.Session.Trial()) == 12
    assert vm.Session.heading.names == lab.Session.heading.names
    vs = dj.virtual_schema(schema_name, connection=connection)
    (vs.Subject & {"subject_id": "s1"}).delete()
    assert len(lab.Trial()) == 6
    assert vs.schema["Session"].full_table_name == lab.Session.full_table_name
    assert schema_name in dj.list_schemas(connection)
    with pytest.raises(errors.DataJointError, match="has not yet been declared"):
        dj.Schema("jf_missing_schema_x", connection=connection, create_schema=False)


def test_cross_schema_cascade(connection, schema_names, lab):
    other = dj.Schema(schema_names(), connection=connection)
    Session = lab.Session

    @other
    class Note(dj.Manual):
        definition = """
        -> Session
        note_id : int32
        """

    fill_lab(lab)
    Note.insert([{**k, "note_id": 1} for k in lab.Session.keys()])
    (lab.Subject & {"subject_id": "s1"}).delete()
    assert len(Note()) == 2


def test_free_table(connection, lab):
    fill_lab(lab)
    ft = dj.FreeTable(connection, f"{lab.Session.database}.session")
    assert len(ft) == 4 and ft.primary_key == ["subject_id", "session_idx"]


def test_instance_isolated_connection(backend, tmp_path):
    from conftest import backend_url

    inst = dj.Instance(database__url=backend_url(backend, tmp_path), safemode=False)
    try:
        assert inst.config["safemode"] is False and dj.config["safemode"] is True
        assert inst.connection.backend.name == backend
    finally:
        inst.close()


def test_char_values_read_back_without_padding_on_every_backend(schema):
    """PostgreSQL pads char(n) with blanks; MySQL strips them; joinflow reads the same everywhere."""

    @schema
    class Code(dj.Manual):
        definition = """
        code : char(4)
        ---
        label : char(6)
        note = null : char(3)
        """

    Code.insert([{"code": "C", "label": "ab  ", "note": "n "}, {"code": "DDDD", "label": " x", "note": None}])
    assert Code.to_dicts(order_by="code") == [{"code": "C", "label": "ab", "note": "n"},
                                              {"code": "DDDD", "label": " x", "note": None}]
    assert (Code & {"code": "C"}).fetch1("label") == "ab"  # and the padded value still matches
    assert sorted(Code.to_arrays("code").tolist()) == ["C", "DDDD"]
