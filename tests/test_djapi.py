"""DataJoint 2.x API behaviours joinflow matches (issue 21, items 5, 6, 8-12 and the module surface)."""

from __future__ import annotations

import pytest

import joinflow as dj


# -- insert(replace=True) replaces the whole row -------------------------------------------------
def test_replace_resets_columns_not_given(schema):
    @schema
    class Sample(dj.Manual):
        definition = """
        sample_id : int32
        ---
        label = "none" : varchar(20)
        weight = null : float64
        note = null : varchar(40)
        data = null : <blob>
        stamp = CURRENT_TIMESTAMP : datetime
        """

    @schema
    class Child(dj.Manual):
        definition = """
        -> Sample
        """

    Sample.insert1(dict(sample_id=1, label="first", weight=2.5, note="kept?", data=[1, 2]))
    Child.insert1(dict(sample_id=1))
    Sample.insert1(dict(sample_id=1, weight=3.5), replace=True)
    row = Sample.fetch1()
    assert row["stamp"] is not None
    del row["stamp"]
    assert row == dict(sample_id=1, label="none", weight=3.5, note=None, data=None)
    assert len(Child()) == 1  # the row is replaced in place: rows that reference it stay
    # a row given in full replaces every column; other rows are untouched
    Sample.insert1(dict(sample_id=2, label="two"))
    Sample.insert([dict(sample_id=1, label="x", weight=1.0, note="n")], replace=True)
    assert Sample.proj("label", "weight", "note").to_dicts(order_by="sample_id") == [
        dict(sample_id=1, label="x", weight=1.0, note="n"),
        dict(sample_id=2, label="two", weight=None, note=None),
    ]


# -- insert from a CSV file keeps text as written ------------------------------------------------
def test_insert_csv_keeps_leading_zeros(schema, tmp_path):
    @schema
    class Student(dj.Manual):
        definition = """
        student_id : int32
        ---
        home_zip : char(10)
        phone = null : varchar(20)
        gpa = null : float64
        born = null : date
        """

    path = tmp_path / "Student.csv"
    path.write_text(
        "student_id,home_zip,phone,gpa,born\n"
        "100,01352,007,3.5,1991-05-09\n"
        "101,50324,+1-542,,\n"
    )
    Student.insert(path)
    assert Student.to_dicts(order_by="student_id") == [
        dict(student_id=100, home_zip="01352", phone="007", gpa=3.5, born=__import__("datetime").date(1991, 5, 9)),
        dict(student_id=101, home_zip="50324", phone="+1-542", gpa=None, born=None),
    ]
    Student.delete_quick()
    Student.insert(str(path))  # a path given as text
    assert list(Student.to_arrays("home_zip", order_by="student_id")) == ["01352", "50324"]
