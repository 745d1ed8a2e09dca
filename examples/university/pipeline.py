"""A small university database: students enroll in sections of courses and receive grades.

Importing this module declares its tables in the schema ``university`` on the current
connection (``dj.conn()``); the Lookup tables arrive with their ``contents``.  Nothing
else happens at import.  The dependency graph, parents first::

    Department ─> Course ─┐
    Term ─────────────────┴─> Section ─┐
    Student ───────────────────────────┴─> Enroll ─> Grade <─ LetterGrade
    Student ─> StudentMajor <─ Department

``fill()`` adds a deterministic set of students, courses, sections, enrollments and grades to
query (``python examples/university/pipeline.py`` fills the tables and runs a few queries)::

    from university.pipeline import *
    fill()
    Student & (Enroll & {"dept": "CS"})                       # students in any CS section
    dj.U("student_id").aggr(Grade * LetterGrade, gpa="AVG(points)")   # grade point averages
    Section.aggr(Enroll, n="COUNT(*)") & "n >= 10"            # the large sections
"""

import random

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


# -- contents to query ------------------------------------------------------------------------------
FIRST = ["Ana", "Ben", "Chen", "Dee", "Eli", "Fay", "Gus", "Hana", "Ivo", "Jun", "Kai", "Lea", "Max", "Nia",
         "Omar", "Pia", "Quinn", "Rui", "Sam", "Tess", "Uma", "Vik", "Wen", "Xia", "Yusuf", "Zoe"]
LAST = ["Alvarez", "Brown", "Cohen", "Diallo", "Evans", "Fischer", "Garcia", "Huang", "Ito", "Jensen",
        "Kim", "Lopez", "Mehta", "Novak", "Okafor", "Park", "Rossi", "Smith", "Tanaka", "Weber"]
CITIES = [("Columbus", "OH"), ("Dayton", "OH"), ("Austin", "TX"), ("Boston", "MA"), ("Denver", "CO"),
          ("Seattle", "WA"), ("Portland", "OR"), ("Albany", "NY")]
COURSES = [
    ("BIOL", 1006, "World of Living Things", 3), ("BIOL", 2020, "Principles of Cell Biology", 3),
    ("BIOL", 2325, "Human Anatomy", 4), ("CS", 1030, "Introduction to Programming", 4),
    ("CS", 2100, "Discrete Structures", 3), ("CS", 3500, "Software Practice", 4),
    ("CS", 4150, "Algorithms", 3), ("MATH", 1210, "Calculus I", 4), ("MATH", 1220, "Calculus II", 4),
    ("MATH", 2270, "Linear Algebra", 4), ("PHYS", 2210, "Physics for Scientists I", 4),
    ("PHYS", 2220, "Physics for Scientists II", 4),
]


def fill(n_students: int = 60, seed: int = 2024) -> None:
    """Insert a deterministic set of students, majors, courses, sections, enrollments and grades.

    Rows already present are skipped, so calling it twice changes nothing.
    """
    rng = random.Random(seed)
    students = []
    for student_id in range(1000, 1000 + n_students):
        city, state = rng.choice(CITIES)
        students.append((student_id, rng.choice(FIRST), rng.choice(LAST), rng.choice("FMU"),
                         f"{rng.randint(1998, 2006)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}", city, state))
    Student.insert(students, skip_duplicates=True)
    depts = [d for d, *_ in Department.contents]
    StudentMajor.insert([(s[0], rng.choice(depts), f"{rng.choice((2024, 2025))}-0{rng.randint(1, 9)}-15")
                         for s in students if rng.random() < 0.75], skip_duplicates=True)
    Course.insert(COURSES, skip_duplicates=True)
    terms = [t for t in Term.contents if t[1] != "Summer"]
    sections = [(dept, course, year, term, letter, f"{dept[0]}{rng.randint(100, 399)}")
                for dept, course, *_ in COURSES for year, term in terms
                for letter in "ab"[:rng.randint(1, 2)] if rng.random() < 0.6]
    Section.insert(sections, skip_duplicates=True)
    enrollments = [(s[0], *section[:5]) for s in students
                   for section in rng.sample(sections, rng.randint(3, 8))]
    enrollments = list(dict.fromkeys(enrollments))
    Enroll.insert(enrollments, skip_duplicates=True)
    letters = [g for g, _ in LetterGrade.contents]
    weights = [8, 7, 7, 9, 6, 5, 5, 3, 2, 2, 2]  # more A's and B's than F's
    ungraded = {(2025, "Fall")}  # the current term: no grades yet
    Grade.insert([(*e, rng.choices(letters, weights)[0]) for e in enrollments if (e[3], e[4]) not in ungraded],
                 skip_duplicates=True)


if __name__ == "__main__":
    fill()
    print({t.__name__: len(t()) for t in (Student, StudentMajor, Course, Section, Enroll, Grade)})
    print("students in a CS section:", len(Student & (Enroll & {"dept": "CS"})))
    gpa = dj.U("student_id").aggr(Grade * LetterGrade, gpa="AVG(points)").to_pandas(order_by="gpa DESC", limit=5)
    print("top grade point averages:\n", gpa)
    print("the large sections:\n", (Section.aggr(Enroll, n="COUNT(*)") & "n >= 10").to_pandas())
