import joinflow as dj


def test_example_pipeline_declares_inserts_and_cascades(schema):
    @schema
    class Rig(dj.Lookup):
        definition = """
        rig_id : varchar(8)
        """
        contents = [("A",), ("B",)]

    @schema
    class Subject(dj.Manual):
        definition = """
        # experimental subject
        subject_id : varchar(16)
        ---
        sex = 'U' : enum('F', 'M', 'U')
        dob = null : date
        """

    @schema
    class Session(dj.Manual):
        definition = """
        -> Subject
        session_idx : int16
        ---
        started : datetime
        -> [nullable] Rig.proj(rig='rig_id')
        notes = '' : varchar(1024)   # free text
        unique index (started)
        """

        class Trial(dj.Part):
            definition = """
            -> master
            trial : int32
            ---
            outcome : bool
            """

    assert Rig.keys() == [{"rig_id": "A"}, {"rig_id": "B"}]
    Subject.insert1({"subject_id": "s1"})
    Session.insert1({"subject_id": "s1", "session_idx": 1, "started": "2024-01-01 10:00:00", "rig": "A"})
    Session.Trial.insert([{"subject_id": "s1", "session_idx": 1, "trial": t, "outcome": t % 2 == 0} for t in range(3)])
    assert Subject.fetch1("sex") == "U"
    assert len(Session.Trial()) == 3
    (Subject & {"subject_id": "s1"}).delete()
    assert len(Session.Trial()) == 0 and len(Session()) == 0 and len(Subject()) == 0
