"""Data-aware diagrams: Diagram.cascade (what a delete reaches), Diagram.trace (where rows come from),
restrict / counts / prune / iteration, and collapse() in DOT and Mermaid.  Runs on every backend."""

from __future__ import annotations

import pytest

import joinflow as dj
from joinflow import errors

from lab import declare_lab, fill_lab


@pytest.fixture
def lab(schema):
    lab = declare_lab(schema)
    Session = lab.Session

    @schema
    class Score(dj.Computed):
        definition = """
        -> Session
        ---
        value : float64
        """

        def make(self, key):
            self.insert1(dict(key, value=float(len(Session.Trial & key))))

    fill_lab(lab)  # s1, s2 x sessions 0, 1 x trials 0..2; rig 'A' on session 0, NULL on session 1
    Score.populate()
    lab.Score = Score
    lab.schema = schema
    return lab


def name(table) -> str:
    return (table() if isinstance(table, type) else table).full_table_name


# -- cascade --------------------------------------------------------------------------------------
def test_cascade_counts_are_what_delete_deletes(lab):
    doomed = lab.Subject & {"subject_id": "s1"}
    d = dj.Diagram.cascade(doomed)
    # only the seed and what depends on it: Rig (a parent of Session) is not reached
    assert set(d.nodes) == {name(t) for t in (lab.Subject, lab.Session, lab.Trial, lab.Score)}
    counts = d.counts()
    assert counts == {name(lab.Subject): 1, name(lab.Session): 2, name(lab.Trial): 6, name(lab.Score): 2}
    assert list(counts) == d.topo_sort()  # parents first
    before = {n: len(dj.FreeTable(lab.Subject.connection, n)) for n in counts}
    doomed.delete(prompt=False)
    after = {n: len(dj.FreeTable(lab.Subject.connection, n)) for n in counts}
    assert {n: before[n] - after[n] for n in counts} == counts
    assert len(lab.Rig()) == 2


def test_cascade_part_integrity(lab):
    trials = lab.Trial & {"subject_id": "s2", "session_idx": 1}
    with pytest.raises(errors.DataJointError, match=r"(?s)Part.*session__trial.*part_integrity='cascade'"):
        dj.Diagram.cascade(trials)
    ignored = dj.Diagram.cascade(trials, part_integrity="ignore")
    assert ignored.counts() == {name(lab.Trial): 3}
    # 'cascade': the doomed trials bring their master session, and with it the session's Score
    whole = dj.Diagram.cascade(trials, part_integrity="cascade").counts()
    assert whole[name(lab.Session)] == 1 and whole[name(lab.Trial)] == 3 and whole[name(lab.Score)] == 1
    with pytest.raises(errors.DataJointError, match="part_integrity must be"):
        dj.Diagram.cascade(lab.Subject, part_integrity="maybe")
    with pytest.raises(errors.DataJointError, match="restrict the table by your query"):
        dj.Diagram.cascade(lab.Subject * lab.Session)


# -- trace ----------------------------------------------------------------------------------------
def test_trace_restricts_ancestors_to_the_rows_they_derive_from(lab):
    score = lab.Score & {"subject_id": "s2", "session_idx": 0}
    t = dj.Diagram.trace(score)
    assert set(t.nodes) == {name(x) for x in (lab.Rig, lab.Subject, lab.Session, lab.Score)}
    assert t[lab.Subject].to_dicts() == [{"subject_id": "s2", "sex": "F", "dob": None}]
    assert isinstance(t[lab.Subject], lab.Subject)  # a class gives its own table type back
    # Rig through Session's renamed, nullable secondary foreign key (rig -> rig_id)
    assert t[lab.Rig()].keys() == [{"rig_id": "A"}]
    assert t[f"{lab.schema.database}.session"].keys() == [{"subject_id": "s2", "session_idx": 0}]
    assert t[lab.Score].keys() == score.keys()
    assert t.counts() == {name(lab.Rig): 1, name(lab.Subject): 1, name(lab.Session): 1, name(lab.Score): 1}
    # several rows: the union of what each derives from
    both = dj.Diagram.trace(lab.Score & "session_idx = 0")
    assert sorted(r["subject_id"] for r in both[lab.Subject].keys()) == ["s1", "s2"]


def test_trace_errors_name_the_table(lab):
    # session 1 has no rig: Rig is upstream by the foreign keys but these rows reach none of it
    t = dj.Diagram.trace(lab.Trial & {"subject_id": "s1", "session_idx": 1})
    assert t.counts()[name(lab.Session)] == 1
    assert len(t[lab.Rig]) == 0 and name(lab.Rig) not in t.prune()
    with pytest.raises(errors.DataJointError, match=r"(?s)score.* is not upstream of .*session__trial"):
        t[lab.Score]
    with pytest.raises(errors.DataJointError, match=r"not a restricted query .*subject.*diagram\[T\] & condition"):
        t[lab.Subject & {"subject_id": "s1"}]
    with pytest.raises(errors.DataJointError, match="takes a table class"):
        t[42]


def test_trace_agrees_with_upstream_in_make(schema):
    lab = declare_lab(schema)
    seen = {}

    Session = lab.Session

    @schema
    class Summary(dj.Computed):
        definition = """
        -> Session
        ---
        n : int32
        """

        def make(self, key):
            traced = dj.Diagram.trace(lab.Session & key)
            seen[key["subject_id"], key["session_idx"]] = (
                self.upstream[lab.Subject].to_dicts() == traced[lab.Subject].to_dicts(),
                self.upstream[lab.Rig].keys() == traced[lab.Rig].keys(),
            )
            self.insert1(dict(key, n=len(self.upstream[lab.Subject])))

    fill_lab(lab, subjects=("a", "b"), sessions=1)
    Summary.populate()
    assert seen == {("a", 0): (True, True), ("b", 0): (True, True)}


# -- restrict, counts, prune, iteration -----------------------------------------------------------
def test_restrict_propagates_with_and_and_chains(lab):
    d = dj.Diagram(lab.schema)
    assert not d.restricted
    with pytest.raises(errors.DataJointError, match="counts\\(\\) needs a restricted diagram"):
        d.counts()
    one = d.restrict(lab.Subject & {"subject_id": "s1"})
    assert one.counts() == {name(lab.Subject): 1, name(lab.Session): 2, name(lab.Trial): 6, name(lab.Score): 2}
    both = one.restrict(lab.Session & "session_idx = 1")  # AND: s1's session 1 only
    assert both.counts() == {name(lab.Subject): 1, name(lab.Session): 1, name(lab.Trial): 3, name(lab.Score): 1}
    assert one.counts()[name(lab.Session)] == 2  # restrict returns a new diagram
    # iteration: parents first, each table restricted; reversed: children first
    sizes = {t.full_table_name: len(t) for t in both}
    assert [t.full_table_name for t in both] == both.topo_sort()
    assert sizes[name(lab.Rig)] == 2 and sizes[name(lab.Trial)] == 3
    assert [t.full_table_name for t in reversed(both)] == both.topo_sort()[::-1]
    assert [len(t) for t in reversed(both)] == [sizes[n] for n in both.topo_sort()[::-1]]
    assert both[lab.Score].keys() == [{"subject_id": "s1", "session_idx": 1}]


def test_prune_drops_tables_left_empty(lab):
    (lab.Score & {"subject_id": "s2"}).delete(prompt=False)
    d = dj.Diagram(lab.schema).restrict(lab.Subject & {"subject_id": "s2"})
    pruned = d.prune()
    assert name(lab.Score) not in pruned and name(lab.Session) in pruned
    assert name(lab.Rig) in pruned  # unrestricted, not empty
    assert pruned.counts()[name(lab.Trial)] == 6
    assert set(dj.Diagram(lab.schema).prune().nodes) == set(d.nodes)  # no restriction, nothing empty


def test_restrict_bad_input(lab):
    with pytest.raises(errors.DataJointError, match=r"(?s)subject.* is not in this diagram"):
        dj.Diagram(lab.Session).restrict(lab.Subject & {"subject_id": "s1"})
    cascade = dj.Diagram.cascade(lab.Subject & {"subject_id": "s1"})
    with pytest.raises(errors.DataJointError, match=r"Diagram.cascade\(\); restrict a plain diagram"):
        cascade.restrict(lab.Session)
    with pytest.raises(errors.DataJointError, match=r"(?s)score.* is not in this diagram"):
        dj.Diagram(lab.Subject)[lab.Score]


# -- collapse -------------------------------------------------------------------------------------
def test_collapse_draws_one_box_and_expanded_wins(lab):
    whole = dj.Diagram(lab.schema).collapse()
    text = whole.make_mermaid()
    assert "(5 tables)" in text and ":::collapsed" in text and "subgraph" not in text
    dot = whole.make_dot().to_string()
    assert "box3d" in dot and "(5 tables)" in dot and "ellipse" not in dot

    mixed = dj.Diagram(lab.Subject) + dj.Diagram(lab.schema).collapse()
    text = mixed.make_mermaid()
    assert "(4 tables)" in text and "<u>Subject</u>" in text
    subject_id = next(line.split("(")[0].strip() for line in text.splitlines() if "Subject</u>" in line)
    box_id = next(line.split("[[")[0].strip() for line in text.splitlines() if "(4 tables)" in line)
    assert f"{subject_id} --- {box_id}" in text  # one link from Subject into the collapsed rest
    dot = mixed.make_dot()
    shapes = {n.get_name(): n.get("shape") for n in dot.get_nodes()}
    assert shapes[box_id] == "box3d"
    # order does not matter; the expanded table wins either way
    assert "(4 tables)" in (dj.Diagram(lab.schema).collapse() + dj.Diagram(lab.Subject)).make_mermaid()
    # parts added to a collapsed master stay inside the box
    assert "(2 tables)" in dj.Diagram(lab.Session).collapse().add_parts().make_mermaid()
