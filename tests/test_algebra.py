"""Query algebra: each operator against the same query written in plain SQL, on every backend."""

import pytest

import joinflow as dj
from joinflow import errors

from lab import declare_lab, fill_lab


@pytest.fixture
def lab(schema):
    lab = declare_lab(schema)
    fill_lab(lab, subjects=("s1", "s2", "s3"), sessions=3, trials=4)
    lab.Subject.insert1({"subject_id": "s4", "sex": "M"})  # no sessions
    return lab


def sql_rows(connection, sql):
    return sorted(tuple(r) for r in connection.query(sql))


def q(table):
    return table.full_table_name


def test_aggregation_matches_sql(lab, connection):
    agg = lab.Subject.aggr(lab.Trial, n="count(trial)", wins="sum(CASE WHEN outcome THEN 1 ELSE 0 END)")
    got = sorted((r["subject_id"], int(r["n"]), int(r["wins"] or 0)) for r in agg.to_dicts())
    expected = sql_rows(
        connection,
        f"SELECT s.subject_id, count(t.trial), coalesce(sum(CASE WHEN t.outcome THEN 1 ELSE 0 END), 0) "
        f"FROM {q(lab.Subject)} s LEFT JOIN {q(lab.Trial)} t ON s.subject_id = t.subject_id GROUP BY s.subject_id",
    )
    assert got == [(a, int(b), int(c)) for a, b, c in expected]
    assert ("s4", 0, 0) in got  # keep_all_rows by default
    only = lab.Subject.aggr(lab.Trial, n="count(trial)", exclude_nonmatching=True)
    assert len(only) == 3
    assert len(lab.Subject.aggr(lab.Trial, n="count(trial)", keep_all_rows=False)) == 3
    kept = lab.Subject.aggr(lab.Session, ..., n="count(session_idx)")
    assert kept.heading.names == ["subject_id", "sex", "dob", "n"]  # secondaries kept (works on MariaDB too)
    restricted = lab.Subject.aggr(lab.Session, n="count(session_idx)") & "n > 0"
    assert len(restricted) == 3


def test_aggregation_requires_group_to_contain_key(lab):
    with pytest.raises(errors.DataJointError, match="primary key"):
        lab.Session.aggr(lab.Subject, n="count(*)")


def test_union_of_restricted_copies(lab):
    u = (lab.Session & {"subject_id": "s1"}) + (lab.Session & {"session_idx": 2})
    assert len(u) == 3 + 2
    assert set((r["subject_id"], r["session_idx"]) for r in u.to_dicts()) == {
        ("s1", 0), ("s1", 1), ("s1", 2), ("s2", 2), ("s3", 2)}
    with pytest.raises(errors.DataJointError, match="same primary key"):
        lab.Session + lab.Subject


def test_universal_set(lab, connection):
    sexes = dj.U("sex") & lab.Subject
    assert sorted(r["sex"] for r in sexes.to_dicts()) == ["F", "M"]
    assert sexes.primary_key == ["sex"]
    per_sex = dj.U("sex").aggr(lab.Subject, n="count(*)")
    assert sorted((r["sex"], int(r["n"])) for r in per_sex.to_dicts()) == [("F", 3), ("M", 1)]
    total = dj.U().aggr(lab.Trial, n="count(*)")
    assert int(total.fetch1("n")) == sql_rows(connection, f"SELECT count(*) FROM {q(lab.Trial)}")[0][0]
    assert len(lab.Subject & dj.U("sex")) == 4
    with pytest.raises(errors.DataJointError, match="infinite"):
        dj.U("sex") - lab.Subject
    with pytest.raises(errors.DataJointError, match="no longer supported"):
        lab.Subject * dj.U("sex")
    with pytest.raises(errors.DataJointError, match="no longer supported"):
        dj.U("sex") * lab.Subject


def test_top(lab):
    first = lab.Session & dj.Top(2, order_by="started DESC")
    assert len(first) == 2
    latest = max(lab.Session.to_dicts(), key=lambda r: r["started"])
    assert first.to_dicts(order_by="started DESC")[0]["started"] == latest["started"]
    assert len(lab.Session & dj.Top(2, order_by="KEY", offset=8)) == 1
    (lab.Trial & dj.Top(5)).delete_quick()
    assert len(lab.Trial()) == 36 - 5


def test_restriction_by_query_without_common_attributes(lab):
    assert len(lab.Subject & lab.Rig) == 4  # Rig is not empty: all rows
    assert len(lab.Subject & (lab.Rig & "rig_id = 'Z'")) == 0  # empty: none


def test_not_of_a_query_and_or_lists(lab):
    with_sessions = lab.Subject & lab.Session
    assert len(lab.Subject - lab.Session) == 1
    assert len(lab.Subject & dj.Not(lab.Session)) == 1
    assert len(with_sessions) == 3
    assert len(lab.Session & [{"session_idx": 0}, {"subject_id": "s3"}]) == 3 + 2


def test_chained_renames_keep_lineage(lab):
    renamed = lab.Subject.proj(animal="subject_id").proj(creature="animal")
    assert renamed.heading["creature"].lineage == lab.Subject.heading["subject_id"].lineage
    back = renamed.proj(subject_id="creature")
    assert len(back * lab.Session) == 9


def test_homonyms_are_refused_with_a_fix(schema):
    @schema
    class Experiment(dj.Manual):
        definition = """
        session_id : int32
        """

    @schema
    class Recording(dj.Manual):
        definition = """
        session_id : int32
        ---
        notes = '' : varchar(100)
        """

    Experiment.insert1({"session_id": 1})
    Recording.insert1({"session_id": 1})
    with pytest.raises(errors.DataJointError, match=r"different lineages.*proj"):
        Experiment * Recording
    with pytest.raises(errors.DataJointError, match="different lineages"):
        Experiment & Recording
    assert len(Experiment.join(Recording, semantic_check=False)) == 1
    assert len(Experiment.restrict(Recording, semantic_check=False)) == 1
    assert len(Experiment * Recording.proj(rec_id="session_id")) == 1


def test_null_handling_and_string_conditions_with_quotes(lab):
    assert len(lab.Session & "rig IS NULL") == len(lab.Session & {"rig": None}) == 3
    lab.Subject.insert1({"subject_id": "o'brien", "sex": "M"})
    assert len(lab.Subject & "subject_id = 'o''brien'") == 1
    assert len(lab.Subject & {"subject_id": "o'brien"}) == 1


def test_values_are_bound_parameters(lab):
    before = len(lab.Subject())
    evil = "x' OR 1=1 --"
    assert len(lab.Subject & {"subject_id": evil}) == 0
    (lab.Subject & {"subject_id": evil}).delete()
    assert len(lab.Subject()) == before
    lab.Subject.insert1({"subject_id": evil})
    assert (lab.Subject & {"subject_id": evil}).fetch1("subject_id") == evil


def test_projection_forms(lab):
    p = lab.Session.proj("rig", started_at="started", twice="session_idx * 2")
    assert p.heading.names[:2] == ["subject_id", "session_idx"]
    assert set(p.heading.names) == {"subject_id", "session_idx", "rig", "started_at", "twice"}
    assert all(int(r["twice"]) == 2 * r["session_idx"] for r in p.to_dicts())
    assert lab.Session.proj(..., "-notes").heading.names == ["subject_id", "session_idx", "started", "rig"]
    with pytest.raises(errors.DataJointError, match="Cannot exclude primary key"):
        lab.Session.proj("-subject_id")
    assert len(p & "twice > 2") == 3


def test_deep_expression_compiles(lab):
    expr = lab.Session()
    for i in range(30):
        expr = (expr & f"session_idx >= 0").proj(..., **{f"c{i}": "(session_idx)"}) if i % 2 else expr & {"subject_id": "s1"}
    assert len(expr) == 3
    assert "SELECT" in expr.make_sql()


def test_same_shape_different_values(lab, connection):
    """Queries of one shape share their compiled SQL; each still runs with its own values."""
    for subject, n_sessions in (("s1", 3), ("s2", 3), ("s4", 0), ("nobody", 0), ("s3", 3)):
        q = (lab.Session & {"subject_id": subject}).proj(..., n="session_idx + 1") & "session_idx >= 0"
        assert len(q) == n_sessions
        assert {r["subject_id"] for r in q.to_dicts()} == ({subject} if n_sessions else set())
        assert bool(q) == (n_sessions > 0)
    for idx, expected in ((0, 3), (1, 3), (7, 0)):
        trials = lab.Trial & (lab.Session & {"session_idx": idx})  # values inside a semijoin
        assert len(trials) == expected * 4
    # None changes the SQL (IS NULL), so it is a different shape
    assert len(lab.Session & {"rig": None}) == 3
    assert len(lab.Session & {"rig": "A"}) == 6
    # the same shape over another table of the same name in another schema
    other = dj.Schema(lab.Session.database + "_b", connection=connection)
    try:
        lab_b = declare_lab(other)
        fill_lab(lab_b, subjects=("s1",), sessions=1, trials=1)
        assert len(lab_b.Session & {"subject_id": "s1"}) == 1
        assert len(lab.Session & {"subject_id": "s1"}) == 3
    finally:
        other.drop(prompt=False)


def test_make_sql_shows_values_but_runs_bound(lab):
    evil = "x' OR 1=1 --"
    q = lab.Subject & {"subject_id": evil}
    sql = q.make_sql()
    assert "'x'' OR 1=1 --'" in sql  # displayed as an escaped literal
    assert len(q) == 0 and q.to_dicts() == []
    like = lab.Subject & "subject_id LIKE 's%'"  # a percent sign in SQL text, next to bound values
    assert len(like) == 4 and "LIKE 's%'" in like.make_sql()
    assert sorted(r["subject_id"] for r in (like & {"sex": "F"}).to_dicts()) == ["s1", "s2", "s3"]
    top = lab.Session & dj.Top(2, "started DESC")
    assert len(top) == 2 and "SELECT" in top.make_sql()


def test_redeclared_table_gets_its_own_sql(schema):
    """Compiled SQL is reused per shape; a table declared again with other columns is a new shape."""

    @schema
    class Pair(dj.Manual):
        definition = """
        a : int32
        ---
        b : varchar(8)
        """

    Pair.insert1({"a": 1, "b": "x"})
    assert (Pair & {"a": 1}).to_dicts() == [{"a": 1, "b": "x"}]
    Pair.drop()

    @schema
    class Pair(dj.Manual):  # noqa: F811 - the same table, declared again
        definition = """
        b : varchar(8)
        ---
        a : int32
        c = 0 : int32
        """

    Pair.insert1({"a": 2, "b": "y"})
    assert (Pair & {"a": 2}).to_dicts() == [{"b": "y", "a": 2, "c": 0}]


# -- joins whose right side is a join; SQL text next to namesake columns ------------------------------------


def test_join_with_a_join_on_the_right(lab, connection):
    """SQLite cannot see inside a parenthesised join from the outer ON: such joins are written flat."""
    S, Se, T = lab.Subject, lab.Session, lab.Trial
    expected = sql_rows(
        connection,
        f"SELECT s.subject_id, t.session_idx, t.trial FROM {q(S)} s JOIN {q(Se)} se ON s.subject_id = se.subject_id "
        f"JOIN {q(T)} t ON se.subject_id = t.subject_id AND se.session_idx = t.session_idx",
    )
    nested = S * (Se * T)
    assert len(nested) == len(expected) == 36
    assert sorted((r["subject_id"], r["session_idx"], r["trial"]) for r in nested.to_dicts()) == expected
    assert sorted(nested.keys(), key=str) == sorted((S * Se * T).keys(), key=str)
    counts = S.aggr(Se * T, n="count(trial)")
    assert sorted((r["subject_id"], int(r["n"])) for r in counts.to_dicts()) == [
        ("s1", 12), ("s2", 12), ("s3", 12), ("s4", 0)]
    assert len(S.aggr(Se * T, n="count(*)", exclude_nonmatching=True)) == 3
    left = S.join(Se * T, left=True)  # a left join keeps the right side whole (a subquery)
    assert len(left) == 36 + 1
    assert [r["trial"] for r in left.to_dicts() if r["subject_id"] == "s4"] == [None]
    deeper = S * (Se * (T & {"trial": 1}))
    assert len(deeper) == 9 and len(S & deeper.proj()) == 3
    # a left join inside the right side stays a left join
    extended = S * T.extend(Se)
    assert len(extended) == 36
    assert sorted(((r["subject_id"], r["session_idx"], r["trial"], r["rig"]) for r in extended.to_dicts()),
                  key=str) == sorted(
        sql_rows(connection, f"SELECT t.subject_id, t.session_idx, t.trial, se.rig FROM {q(T)} t LEFT JOIN {q(Se)} se "
                             f"ON se.subject_id = t.subject_id AND se.session_idx = t.session_idx"),
        key=str)
    # the attribute joined on comes from an outer-joined table of the right side: not flattened
    rig = lab.Rig.proj(rig="rig_id")
    by_rig = rig * T.extend(Se)
    expected = sql_rows(
        connection,
        f"SELECT t.subject_id, t.session_idx, t.trial FROM {q(T)} t JOIN {q(Se)} se "
        f"ON se.subject_id = t.subject_id AND se.session_idx = t.session_idx WHERE se.rig IS NOT NULL",
    )
    assert sorted((r["subject_id"], r["session_idx"], r["trial"]) for r in by_rig.to_dicts()) == expected
    assert len(by_rig) == len(expected) == 24


def test_string_restriction_next_to_namesakes(lab, connection):
    """SQL text names the expression's attributes even when several tables of its FROM share a name."""
    S, Se, T = lab.Subject, lab.Session, lab.Trial
    expected = sql_rows(connection, f"SELECT subject_id, session_idx, trial FROM {q(T)} WHERE session_idx > 0")
    assert len(expected) == 24

    def rows(expr):
        return sorted((r["subject_id"], r["session_idx"], r["trial"]) for r in expr.to_dicts())

    for expr in (
        (Se * T) & "session_idx > 0",
        (Se & "session_idx > 0") * T,  # the text was placed before the join brought in a namesake
        T * (Se & "session_idx > 0"),
        (Se * T) & dj.AndList(["session_idx > 0", "trial >= 0"]),
        (Se * T) & ["session_idx = 1", "session_idx = 2"],
        (Se * T) - "session_idx = 0",
        S * ((Se * T) & "session_idx > 0"),
        (S * Se * T) & "subject_id <> 'nobody' AND session_idx > 0",
    ):
        assert len(expr) == 24
        assert rows(expr) == expected
    # computed attributes over (or next to) namesakes
    p = (Se * T).proj(x="session_idx * 10 + trial")
    assert sorted(int(r["x"]) for r in p.to_dicts()) == sorted(10 * i + t for _s, i, t in sql_rows(
        connection, f"SELECT subject_id, session_idx, trial FROM {q(T)}"))
    p = Se.proj(x="session_idx + 1") * T
    assert all(int(r["x"]) == r["session_idx"] + 1 for r in p.to_dicts()) and len(p.to_dicts()) == 36
    assert len(p & "x > 1") == 24
    # a computed attribute compared inside a semijoin with a query that has a column of that text's name
    shifted = Se.proj(trial="session_idx + 1")  # no lineage: semantic_check=False
    matched = shifted.restrict(T & "trial = 2", semantic_check=False)
    assert sorted((r["subject_id"], r["session_idx"]) for r in matched.to_dicts()) == [
        ("s1", 1), ("s2", 1), ("s3", 1)]
    # chained restrictions of one table stay one flat query
    flat = Se & "session_idx > 0" & {"subject_id": "s1"} & "rig IS NULL"
    assert "SELECT" not in flat.make_sql().split("FROM", 1)[1]
    assert len(flat) == 1


def test_populate_a_join_key_source_by_string(schema):
    lab = declare_lab(schema)
    fill_lab(lab, subjects=("s1", "s2"), sessions=3, trials=2)

    @schema
    class TrialStat(dj.Computed):
        definition = """
        -> lab.Trial
        ---
        value : int32
        """
        key_source = lab.Session.proj() * lab.Trial.proj()  # a join on subject_id and session_idx

        def make(self, key):
            self.insert1(dict(key, value=10 * key["session_idx"] + key["trial"]))

    assert TrialStat.progress("session_idx = 1") == (2 * 2, 2 * 2)
    TrialStat.populate("session_idx = 1", {"subject_id": "s1"})
    assert sorted(TrialStat.keys(), key=str) == [
        {"subject_id": "s1", "session_idx": 1, "trial": t} for t in (0, 1)]
    TrialStat.populate("session_idx >= 1")
    got = sorted((r["subject_id"], r["session_idx"], r["trial"], r["value"]) for r in TrialStat.to_dicts())
    assert got == [(s, i, t, 10 * i + t) for s in ("s1", "s2") for i in (1, 2) for t in (0, 1)]
    assert len(TrialStat.pending("session_idx >= 0")) == 2 * 2


def test_restriction_by_a_list_of_keys(lab, connection):
    """A list of keys: rows matching any of them (the same attributes in every dict: one IN)."""
    T = lab.Trial

    def key_tuples(rows):
        return sorted((r["subject_id"], r["session_idx"], r["trial"]) for r in rows)

    keys = [{"subject_id": s, "session_idx": i, "trial": t} for s in ("s1", "s3") for i in (0, 2) for t in (1, 3)]
    keys.append({"subject_id": "nobody", "session_idx": 0, "trial": 0})
    assert key_tuples((T & keys).keys()) == key_tuples(keys[:-1])
    assert len(T - keys) == len(T & dj.Not(keys)) == 36 - 8
    # a list longer than SQLite's expression depth (an OR of 1200 terms fails there)
    many = [{"subject_id": "s2", "session_idx": 1, "trial": t} for t in range(1200)]
    assert key_tuples((T & many).keys()) == [("s2", 1, t) for t in range(4)]
    evil = "x' OR 1=1 --"
    assert len(T & [{"subject_id": "s2"}, {"subject_id": "s3"}, {"subject_id": evil}]) == 24
    assert len(T & [{"subject_id": evil}, {"subject_id": evil + "2"}]) == 0
    assert len(T & [{"session_idx": 1, "trial": 0}, {"session_idx": 2}]) == 3 + 12  # mixed attributes: OR
    assert len(lab.Session & [{"rig": None}, {"rig": "A"}]) == 9  # None needs IS NULL: OR
    assert len(T & [{"trial": 0, "unknown": 1}, {"trial": 1, "unknown": 2}]) == 18  # unknown keys are ignored
    for subject, idx in (("s1", 0), ("s2", 2), ("s4", 0)):  # one shape, other values
        expected = sql_rows(connection, f"SELECT subject_id, session_idx, trial FROM {q(T)} "
                                        f"WHERE subject_id = '{subject}' AND session_idx IN ({idx}, 1)")
        pair = [{"subject_id": subject, "session_idx": idx}, {"subject_id": subject, "session_idx": 1}]
        assert key_tuples((T & pair).keys()) == expected
        assert len(T & pair) == len(expected)
