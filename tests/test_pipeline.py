"""joinflow.pipeline (the adapters' interface) and the joinflow command line."""

import sys
import textwrap

import pytest

from joinflow import cli
from joinflow.pipeline import Pipeline, Step, load_step, shard_of


@pytest.fixture
def pipeline_module(tmp_path, backend, connection, schema_name, monkeypatch):
    """An importable pipeline module bound to this test's backend."""
    url = connection.url.render_as_string(hide_password=False)
    code = textwrap.dedent(f'''
        import joinflow as dj
        config = dj.config.copy()
        config["safemode"] = False
        connection = dj.Connection(url={url!r}, config=config)
        FAIL = {{13}}  # animals whose make() fails (tests change it)
        schema = dj.Schema({schema_name!r}, connection=connection)

        @schema
        class Animal(dj.Manual):
            definition = """
            animal : int32
            """

        @schema
        class Recording(dj.Manual):
            definition = """
            -> Animal
            rec : int16
            ---
            signal : float64
            """

        @schema
        class Spikes(dj.Computed):
            definition = """
            -> Recording
            ---
            count : int32
            """

            class Unit(dj.Part):
                definition = """
                -> master
                unit : int16
                """

            def make(self, key):
                if key["animal"] in FAIL:
                    raise RuntimeError("unlucky animal")
                value = (Recording & key).fetch1("signal")
                self.insert1(dict(key, count=int(value)))
                self.Unit.insert([dict(key, unit=u) for u in range(2)])

        @schema
        class Summary(dj.Computed):
            definition = """
            -> Spikes
            ---
            units : int32
            """

            def make(self, key):
                self.insert1(dict(key, units=len(Spikes.Unit & key)))
    ''')
    name = f"jf_pipe_{schema_name}"
    (tmp_path / f"{name}.py").write_text(code)
    monkeypatch.syspath_prepend(str(tmp_path))
    module = __import__(name)
    yield module
    module.connection.close()
    sys.modules.pop(name, None)


def test_steps_follow_the_foreign_key_graph(pipeline_module):
    pipe = Pipeline(pipeline_module)
    names = [s.name.split(":")[1] for s in pipe.steps]
    assert names == ["Spikes", "Summary"]
    spikes, summary = pipe.steps
    assert spikes.upstream == [] and summary.upstream == [spikes.name]
    tiers = {n.name.split(":")[1]: n.tier for n in pipe.nodes}
    assert tiers == {"Animal": "Manual", "Recording": "Manual", "Spikes": "Computed",
                     "Spikes.Unit": "Part", "Summary": "Computed"}
    assert load_step(spikes.name).full_table_name == spikes.full_table_name


def test_pending_batches_shards_and_run(pipeline_module):
    m = pipeline_module
    m.Animal.insert([{"animal": a} for a in (1, 2, 13)])
    m.Recording.insert([{"animal": a, "rec": r, "signal": a * 10 + r} for a in (1, 2, 13) for r in range(4)])
    pipe = Pipeline(m)
    spikes = pipe.step("Spikes")
    assert spikes.pending_count() == 12
    batches = list(spikes.pending_keys(5))
    assert [len(b) for b in batches] == [5, 5, 2]
    plan = spikes.plan(3)
    assert sum(p["keys"] for p in plan) == 12
    token = spikes.change_token()
    shard = plan[0]
    result = spikes.run(shard=shard["shard"], nshards=3)
    assert result["rows_added"] + result["error_count"] == shard["keys"]
    again = spikes.run(shard=shard["shard"], nshards=3)  # an overlapping/repeated run does nothing twice
    assert again["rows_added"] == 0
    result = spikes.run(batches[0])
    assert all(k in spikes.table for k in batches[0] if k["animal"] != 13)
    for p in plan[1:]:
        spikes.run(shard=p["shard"], nshards=3)
    assert spikes.change_token() != token
    status = spikes.status()
    assert status["done"] == 8 and status["error"] == 4 and status["pending"] == 0  # errors are not pending
    retry = spikes.run(retry_errors=True)  # still failing: recorded again, nothing lost
    assert retry["error_count"] == 4 and retry["rows_added"] == 0
    assert {shard_of(k, 3) for k in spikes.table.keys()} <= {0, 1, 2}


def test_cli_status_and_populate(pipeline_module, capsys):
    m = pipeline_module
    m.Animal.insert([{"animal": 1}, {"animal": 2}])
    m.Recording.insert([{"animal": a, "rec": 0, "signal": 5.0} for a in (1, 2)])
    assert cli.main(["status", m.__name__]) == 0
    out = capsys.readouterr().out
    assert "Spikes" in out and "pending" in out
    assert cli.main(["populate", m.__name__]) == 0
    out = capsys.readouterr().out
    assert "Spikes: 2 computed, 0 errors, 0 pending" in out
    assert "Summary: 2 computed" in out
    assert len(m.Summary()) == 2
    assert cli.main(["status", m.__name__, "--json"]) == 0
    assert '"done": 2' in capsys.readouterr().out


def test_step_errors_and_row_count(pipeline_module):
    m = pipeline_module
    m.Animal.insert([{"animal": 13}, {"animal": 1}])
    m.Recording.insert([{"animal": a, "rec": 0, "signal": 1.0} for a in (1, 13)])
    spikes = Pipeline(m).step("Spikes")
    summary = spikes.run(count_pending=False)
    assert summary["pending_left"] is None and summary["rows_added"] == 1
    errors = spikes.errors()
    assert [e["key"] for e in errors] == [{"animal": 13, "rec": 0}]
    assert "unlucky animal" in errors[0]["error_message"] and "Traceback" in errors[0]["error_stack"]
    assert spikes.errors(keys=[{"animal": 1, "rec": 0}]) == []
    assert spikes.row_count() == 1


def _structure(pipe):
    return ([(n.name, n.tier, n.schema, n.table_name, n.full_table_name, n.parents, n.parts) for n in pipe.nodes],
            [(s.name, s.upstream, s.full_table_name, s.class_name) for s in pipe.steps])


def test_manifest_round_trip_needs_no_import_or_database(pipeline_module, tmp_path, monkeypatch):
    import json

    from joinflow.errors import DataJointError
    from joinflow.pipeline import manifest_main, read_manifest

    pipe = Pipeline(pipeline_module)
    manifest = pipe.to_manifest()
    assert manifest["modules"] == [pipeline_module.__name__]
    assert manifest["schemas"] == [pipe.nodes[0].schema]
    assert [s["name"].split(":")[1] for s in manifest["steps"]] == ["Spikes", "Summary"]
    assert manifest["hash"].startswith("sha256:") and json.loads(json.dumps(manifest)) == manifest

    path = tmp_path / "pipeline.json"
    pipe.write_manifest(path)
    # rebuilt without the module: nothing is imported (or connected) until a step is used
    sys.modules.pop(pipeline_module.__name__)
    try:
        again = Pipeline.from_manifest(path)
        assert pipeline_module.__name__ not in sys.modules
        assert _structure(again) == _structure(pipe)
        assert again.to_manifest() == manifest and again.manifest_hash == manifest["hash"]
        assert again.steps[1].upstream == [again.steps[0].name]
        assert pipeline_module.__name__ not in sys.modules
        spikes = again.step("Spikes")
        assert spikes.pending_count() == 0  # first use imports the module (and connects)
        assert pipeline_module.__name__ in sys.modules
    finally:
        reimported = sys.modules.get(pipeline_module.__name__)
        if reimported is not None and reimported is not pipeline_module:
            reimported.connection.close()
        sys.modules[pipeline_module.__name__] = pipeline_module

    # the entry point writes the same manifest
    out = tmp_path / "cli.json"
    assert manifest_main(["manifest", pipeline_module.__name__, "-o", str(out)]) == 0
    assert read_manifest(out) == manifest

    # bad input: clear errors, file names and the fix in the message
    with pytest.raises(DataJointError, match="does not exist.*python -m joinflow.pipeline manifest"):
        Pipeline.from_manifest(tmp_path / "missing.json")
    edited = dict(manifest, steps=manifest["steps"][:1])
    with pytest.raises(DataJointError, match="hash mismatch"):
        Pipeline.from_manifest(edited)
    with pytest.raises(DataJointError, match="not a joinflow pipeline manifest"):
        Pipeline.from_manifest({"tables": []})
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(DataJointError, match="not valid JSON"):
        Pipeline.from_manifest(tmp_path / "bad.json")
    assert manifest_main(["manifest", "no_such_module_xyz", "-o", str(out)]) == 2
    assert read_manifest(out) == manifest  # a failed run leaves the old file alone


def test_run_computes_exactly_the_given_keys(pipeline_module):
    """Step.run(keys) restricts to exactly those keys (numpy scalars as values, partial keys)."""
    import numpy as np

    m = pipeline_module
    m.Animal.insert([{"animal": a} for a in (1, 2)])
    m.Recording.insert([{"animal": a, "rec": r, "signal": 1.0} for a in (1, 2) for r in range(3)])
    spikes = Pipeline(m).step("Spikes")
    batch = [{"animal": np.int32(1), "rec": 2}, {"animal": 2, "rec": np.int64(0)}]
    result = spikes.run(batch)
    assert result["rows_added"] == 2 and result["pending_left"] == 0
    assert sorted(spikes.table.keys(order_by="KEY"), key=lambda k: (k["animal"], k["rec"])) == \
        [{"animal": 1, "rec": 2}, {"animal": 2, "rec": 0}]
    assert spikes.run([{"animal": 1}])["rows_added"] == 2  # the rest of animal 1
    assert spikes.pending_count() == 2


def test_a_selected_pipeline_computes_only_its_steps(pipeline_module):
    """Upstream steps outside the selection are read, never computed (on every backend)."""
    m = pipeline_module
    m.Animal.insert([{"animal": 1}])
    m.Recording.insert([{"animal": 1, "rec": r, "signal": 2.0} for r in range(3)])
    summary_only = Pipeline(m, select="Summary")
    assert [s.class_name for s in summary_only.steps] == ["Summary"]
    results = summary_only.run()
    assert [r["rows_added"] for r in results] == [0]
    assert len(m.Spikes()) == 0 and len(m.Summary()) == 0  # Spikes is a source here: not computed
    assert [r["rows_added"] for r in Pipeline(m, exclude="Summary").run()] == [3]
    assert len(m.Summary()) == 0
    assert [r["rows_added"] for r in summary_only.run()] == [3]


def _spikes_with_errors(m, animals=(1, 13), recs=2):
    m.Animal.insert([{"animal": a} for a in animals])
    m.Recording.insert([{"animal": a, "rec": r, "signal": 1.0} for a in animals for r in range(recs)])
    return Pipeline(m).step("Spikes")


def test_error_keys_are_not_pending_and_stay_reported(pipeline_module):
    """Key states are distinct: a key in error is not pending (not planned, not counted as work,
    no token change while it stays), and every later run still reports it until it is retried."""
    m = pipeline_module
    spikes = _spikes_with_errors(m)
    first = spikes.run()
    assert first["error_count"] == 2 and first["open_errors"] == 2
    assert first["open_error_keys"] == [{"animal": 13, "rec": 0}, {"animal": 13, "rec": 1}]
    assert spikes.pending_count() == 0 and list(spikes.pending_keys()) == [] and spikes.plan(2) == []
    assert spikes.shard_keys(0, 1) == [] and first["pending_left"] == 0
    status = spikes.status()
    assert {k: status[k] for k in ("done", "pending", "reserved", "error", "ignored", "total")} == \
        {"done": 2, "pending": 0, "reserved": 0, "error": 2, "ignored": 0, "total": 4}
    assert status["error_keys"] == first["open_error_keys"]
    token = spikes.change_token()
    again = spikes.run()  # nothing to do, but the open errors are still reported
    assert again["rows_added"] == 0 and again["error_count"] == 0 and again["open_errors"] == 2
    assert spikes.change_token() == token  # only errors: no change for sensors
    # the operator retries one key: it is pending again (and the token says so); ignores the other
    assert spikes.retry_errors([{"animal": 13, "rec": 0}]) == 1
    assert spikes.pending_count() == 1 and spikes.change_token() != token
    assert spikes.ignore({"animal": 13, "rec": 1}) == 1
    status = spikes.status()
    assert (status["pending"], status["error"], status["ignored"]) == (1, 0, 1)
    m.FAIL.clear()
    done = spikes.run()
    assert done["rows_added"] == 1 and done["open_errors"] == 0 and done["open_error_keys"] == []
    assert spikes.pending_count() == 0  # the ignored key is not work
    assert spikes.unignore() == 1 and spikes.pending_count() == 1
    assert spikes.run()["rows_added"] == 1 and spikes.status()["done"] == 4


def test_run_retry_errors_repends_only_its_own_keys(pipeline_module):
    m = pipeline_module
    spikes = _spikes_with_errors(m)
    spikes.run()
    m.FAIL.clear()
    result = spikes.run([{"animal": 13, "rec": 1}], retry_errors=True)
    assert result["rows_added"] == 1 and result["open_errors"] == 1
    assert spikes.status()["error_keys"] == [{"animal": 13, "rec": 0}]
    shard = shard_of({"animal": 13, "rec": 0}, 2)
    result = spikes.run(shard=shard, nshards=2, retry_errors=True)
    assert result["rows_added"] == 1 and result["open_errors"] == 0
    assert spikes.clear_errors() == 0  # DataJoint's word for the same operation


def test_operator_actions_refuse_bad_keys(pipeline_module):
    from joinflow.errors import DataJointError

    m = pipeline_module
    spikes = _spikes_with_errors(m)
    spikes.run()
    with pytest.raises(DataJointError, match="lacks primary-key attribute.*rec"):
        spikes.ignore({"animal": 13})
    with pytest.raises(DataJointError, match=r"\['recording'\].*not primary-key"):
        spikes.retry_errors({"recording": 0})  # a misspelled name must not retry every error
    assert spikes.status()["error"] == 2 and spikes.status()["ignored"] == 0  # nothing changed
    assert spikes.ignore([{"animal": 1, "rec": 0}]) == 0  # done keys are left alone


def test_live_reservations_are_not_pending_expired_ones_are(pipeline_module):
    import datetime

    import sqlalchemy as sa

    m = pipeline_module
    spikes = _spikes_with_errors(m, animals=(1,), recs=2)
    jobs = spikes.table.jobs
    jobs.refresh()
    assert jobs.reserve({"animal": 1, "rec": 0})
    status = spikes.status()
    assert (status["pending"], status["reserved"]) == (1, 1)
    tc = jobs._tc()
    jobs.connection.execute(sa.update(tc).values({jobs.cols.reserved_time: jobs._clock(-10 ** 7)}))  # long expired
    assert spikes.pending_count() == 2  # a dead worker's lease: computable again
    assert spikes.run()["rows_added"] == 2


def test_downstream_computes_the_good_keys_after_a_partly_failed_upstream(pipeline_module):
    m = pipeline_module
    spikes = _spikes_with_errors(m)
    summary = Pipeline(m).step("Summary")
    assert spikes.run()["error_count"] == 2
    assert summary.pending_count() == 2
    assert sorted(k["animal"] for b in summary.pending_keys() for k in b) == [1, 1]
    result = summary.run()
    assert result["rows_added"] == 2 and result["open_errors"] == 0 and summary.pending_count() == 0


def test_rows_added_are_the_rows_committed_in_the_table_and_each_part(pipeline_module):
    """Counts are the committed rows of the table and, separately, of each part table; rows
    of retried keys are counted by the run that made them."""
    m = pipeline_module
    spikes = _spikes_with_errors(m, animals=(1, 2, 13))
    result = spikes.run()
    unit = m.Spikes.Unit().full_table_name
    assert (result["rows_added"], result["keys_made"], result["part_rows_added"]) == (4, 4, {unit: 8})
    assert spikes.part_row_counts() == {unit: 8}
    m.FAIL.clear()
    result = spikes.run(retry_errors=True)
    assert (result["rows_added"], result["part_rows_added"]) == (2, {unit: 4})
    assert spikes.row_count() == 6 and spikes.part_row_counts() == {unit: 12}
