"""The issue's example pipeline, end to end, on every backend."""

from lab import declare_lab


def test_example_pipeline_declares_inserts_and_cascades(schema):
    lab = declare_lab(schema)
    assert lab.Rig.keys() == [{"rig_id": "A"}, {"rig_id": "B"}]
    lab.Subject.insert1({"subject_id": "s1"})
    lab.Session.insert1({"subject_id": "s1", "session_idx": 1, "started": "2024-01-01 10:00:00", "rig": "A"})
    lab.Trial.insert([{"subject_id": "s1", "session_idx": 1, "trial": t, "outcome": t % 2 == 0} for t in range(3)])
    assert lab.Subject.fetch1("sex") == "U"
    assert len(lab.Trial()) == 3
    (lab.Subject & {"subject_id": "s1"}).delete()
    assert len(lab.Trial()) == 0 and len(lab.Session()) == 0 and len(lab.Subject()) == 0
