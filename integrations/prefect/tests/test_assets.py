"""Tables as Prefect assets: materializations with their upstream tables, none for a no-op run."""

from __future__ import annotations

import prefect.events
import pytest

from prefect_joinflow import joinflow_flow
from prefect_joinflow.assets import asset_key

UPSTREAM_TABLES = {"Spikes": {"recording"}, "Quality": {"recording"}, "Summary": {"spikes"},
                   "Report": {"summary", "quality"}}


@pytest.fixture
def asset_events(monkeypatch):
    """The asset events the flow run sends (Prefect's AssetContext imports emit_event per call)."""
    seen = []
    real = prefect.events.emit_event

    def record(*args, **kwargs):
        if kwargs.get("event", "").startswith("prefect.asset."):
            seen.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(prefect.events, "emit_event", record)
    return seen


def materializations(events, status="succeeded"):
    """{asset name: (asset key, {upstream asset keys}, payload)} of the materialization events."""
    found = {}
    for e in events:
        if e["event"] == f"prefect.asset.materialization.{status}":
            upstream = {r["prefect.resource.id"] for r in e["related"] if r.get("prefect.resource.role") == "asset"}
            found[e["resource"]["prefect.resource.name"]] = (e["resource"]["prefect.resource.id"], upstream,
                                                             e.get("payload") or {})
    return found


def test_each_table_is_materialized_with_its_upstream_assets(pipeline_module, asset_events, backend, schema_name):
    m = pipeline_module
    m.add([1, 2])
    state = joinflow_flow(m.module, batch_size=4)(return_state=True)
    assert state.is_completed(), state.message
    found = materializations(asset_events)
    assert set(found) == set(UPSTREAM_TABLES)
    keys = {name: key for name, (key, _, _) in found.items()}
    for name, (key, upstream, payload) in found.items():
        assert key.startswith(f"{backend}://") and key.endswith(f"/{schema_name}/__{name.lower()}"), key
        assert "@" not in key  # no user, no password
        assert {u.rpartition("/")[2].lstrip("_") for u in upstream} == UPSTREAM_TABLES[name], name
        assert all(u.rpartition("/")[0] == key.rpartition("/")[0] for u in upstream)  # same database and schema
        assert payload["rows_added"] == 6 and payload["errors"] == 0
    assert keys["Summary"] in found["Report"][1] and keys["Spikes"] in found["Summary"][1]
    # the Manual source is a referenced asset: in the graph, not materialized by the flow
    referenced = {e["resource"]["prefect.resource.id"] for e in asset_events if e["event"] == "prefect.asset.referenced"}
    assert any(k.endswith("/recording") for k in referenced)

    asset_events.clear()
    state = joinflow_flow(m.module, batch_size=4)(return_state=True)  # nothing pending: no materialization
    assert state.is_completed(), state.message
    assert [e for e in asset_events if e["event"].startswith("prefect.asset.materialization")] == []


def test_a_table_with_errors_has_a_failed_materialization(pipeline_module, asset_events):
    m = pipeline_module
    m.add([1, 13])  # animal 13's Spikes fail
    state = joinflow_flow(m.module, batch_size=100)(return_state=True)
    assert state.is_failed()
    failed = materializations(asset_events, "failed")
    assert set(failed) == {"Spikes"}
    assert failed["Spikes"][2]["errors"] == 3 and failed["Spikes"][2]["rows_added"] == 3
    assert "Spikes" not in materializations(asset_events)


def test_asset_keys_name_the_database_not_the_credentials():
    from sqlalchemy.engine import make_url

    pg = make_url("postgresql+psycopg://lab:secret@db.lab.org:5433/labdb")
    assert asset_key(pg, "ephys", "spikes") == "postgresql://db.lab.org:5433/labdb/ephys/spikes"
    my = make_url("mysql+pymysql://root:pw@127.0.0.1:3306/")
    assert asset_key(my, "ephys", "__spikes") == "mysql://127.0.0.1:3306/ephys/__spikes"
    lite = make_url("sqlite:////data/my lab.db")
    assert asset_key(lite, "ephys", "spikes") == "sqlite:///data/my_lab.db/ephys/spikes"


def test_populated_trigger_matches_the_upstream_tables_event(pipeline_module, monkeypatch):
    """The event-driven pattern: a deployment of a downstream selection, triggered by the
    'populated' event that a run of the upstream table really sends."""
    from prefect.events.schemas.events import Resource

    import prefect_joinflow.flows as flows_module
    from prefect_joinflow import populated_trigger

    sent = []
    real = flows_module.emit_event
    monkeypatch.setattr(flows_module, "emit_event", lambda **kw: (sent.append(kw), real(**kw))[1])
    m = pipeline_module
    m.add([1])
    assert joinflow_flow(m.module, select="Spikes")(return_state=True).is_completed()
    (event,) = [e for e in sent if e["resource"]["prefect.resource.name"] == "Spikes"]

    trigger = populated_trigger(f"{m.name}:Spikes", parameters={"batch_size": 10})
    assert trigger.expect == {event["event"]} == {"joinflow.table.populated"}
    assert trigger.match.matches(Resource(event["resource"]))
    assert not populated_trigger(m.module.Quality).match.matches(Resource(event["resource"]))

    downstream = joinflow_flow(m.module, select="Summary+", name="jfp-downstream")
    deployment = downstream.to_deployment(name="after-spikes", triggers=[trigger], concurrency_limit=1)
    assert deployment.triggers == [trigger] and deployment.concurrency_limit == 1
