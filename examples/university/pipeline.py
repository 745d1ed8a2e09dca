"""A small university database: students enroll in sections of courses and receive grades.

Importing this module declares its tables in the schema ``university`` on the current
connection (``dj.conn()``); the Lookup tables arrive with their ``contents``.  Nothing
else happens at import.  The dependency graph, parents first::

    Department ─> Course ─┐
    Term ─────────────────┴─> Section ─┐
    Student ───────────────────────────┴─> Enroll ─> Grade <─ LetterGrade
    Student ─> StudentMajor <─ Department
"""

import joinflow as dj

schema = dj.Schema("university")


@schema
class Student(dj.Manual):
    definition = """
    student_id : int32              # university-wide ID number
    ---
    first_name : varchar(40)
    last_name : varchar(40)
    sex = 'U' : enum('F', 'M', 'U')
    date_of_birth = null : date
    home_city = '' : varchar(60)
    home_state = '' : char(2)       # US state acronym, e.g. OH
    """


@schema
class Department(dj.Lookup):
    definition = """
    dept : varchar(6)               # abbreviated department name, e.g. BIOL
    ---
    dept_name : varchar(200)        # full department name
    dept_address = '' : varchar(200)
    """
    contents = [
        ("BIOL", "Life Sciences", "931 Eastern Ave"),
        ("CS", "Computer Science", "35 Oak St"),
        ("MATH", "Mathematics", "1 Gauss Way"),
        ("PHYS", "Physics", "2 Newton Pl"),
    ]


@schema
class StudentMajor(dj.Manual):
    definition = """
    # the declared major of a student
    -> Student
    ---
    -> Department
    declare_date : date             # when the major was declared
    """


@schema
class Course(dj.Manual):
    definition = """
    -> Department
    course : int16                  # course number, e.g. 1010
    ---
    course_name : varchar(200)      # e.g. "Neurobiology of Sensation and Movement"
    credits : decimal(3,1)          # number of credit hours earned by completing the course
    """


@schema
class Term(dj.Lookup):
    definition = """
    term_year : int16
    term : enum('Spring', 'Summer', 'Fall')
    """
    contents = [(year, term) for year in (2024, 2025) for term in ("Spring", "Summer", "Fall")]


@schema
class Section(dj.Manual):
    definition = """
    -> Course
    -> Term
    section : char(1)
    ---
    auditorium : varchar(12)
    """


@schema
class Enroll(dj.Manual):
    definition = """
    # a student enrolled in a section
    -> Student
    -> Section
    """


@schema
class LetterGrade(dj.Lookup):
    definition = """
    grade : char(2)
    ---
    points : decimal(3,2)
    """
    contents = [
        ("A", 4.00), ("A-", 3.67), ("B+", 3.33), ("B", 3.00), ("B-", 2.67),
        ("C+", 2.33), ("C", 2.00), ("C-", 1.67), ("D+", 1.33), ("D", 1.00), ("F", 0.00),
    ]


@schema
class Grade(dj.Manual):
    definition = """
    # the grade a student received in a section
    -> Enroll
    ---
    -> LetterGrade
    """
