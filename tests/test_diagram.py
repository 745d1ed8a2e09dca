"""Diagrams of the example pipelines: notation in SVG and Mermaid, operators, status, no-dot errors.

The diagram reads the dependency graph only, so most tests run on SQLite; one test checks
the dependency kinds on every backend (Mermaid, no Graphviz needed).  Tests that render
SVG/PNG need Graphviz's ``dot``: skipped locally without it, failed under CI=true.
"""

from __future__ import annotations

import importlib.util
import os
import re
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

import joinflow as dj
import joinflow.connection
from joinflow import testing
from joinflow.diagram import GraphvizMissingError, dot_available

from lab import declare_lab

ROOT = Path(__file__).resolve().parents[1]
SVG_NS = "{http://www.w3.org/2000/svg}"


@pytest.fixture
def needs_dot():
    if not dot_available():
        message = ("Graphviz's `dot` is not installed: SVG/PNG diagram tests need it "
                   "(apt-get install graphviz)")
        if testing.IN_CI:
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture
def sqlite_conn(tmp_path, monkeypatch):
    """A private SQLite connection that the examples' ``dj.Schema("...")`` picks up via dj.conn()."""
    cfg = dj.config.copy()
    cfg["safemode"] = False
    conn = dj.Connection(url=f"sqlite:///{tmp_path / 'diagram.db'}", config=cfg)
    monkeypatch.setattr(joinflow.connection, "_singleton", conn)
    yield conn
    conn.close()


def load_example(path: Path):
    """Import an example pipeline file under a fresh module name (declares its tables)."""
    name = f"example_{path.parent.name}_{uuid.uuid4().hex[:6]}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def lcms(sqlite_conn):
    return load_example(ROOT / "examples" / "lcms" / "pipeline.py")


@pytest.fixture
def university(sqlite_conn):
    return load_example(ROOT / "examples" / "university" / "pipeline.py")


# -- reading the rendered output ----------------------------------------------------------------
def svg_nodes(svg: str) -> dict[str, dict]:
    """label text -> {tier, shape, fill, stroke, underline, dashed cluster?} of the SVG's nodes."""
    root = ET.fromstring(svg)
    nodes = {}
    for g in root.iter(f"{SVG_NS}g"):
        classes = g.get("class", "").split()
        if "node" not in classes:
            continue
        texts = [t for t in g.iter(f"{SVG_NS}text")]
        label = "".join(texts[0].itertext()).strip()
        shapes = (f"{SVG_NS}ellipse", f"{SVG_NS}path", f"{SVG_NS}polygon")
        shape_el = next((c for c in g.iter() if c.tag in shapes), None)
        nodes[label] = {
            "tier": next((c[5:] for c in classes if c.startswith("tier-")), None),
            "classes": classes,
            "shape": None if shape_el is None else shape_el.tag.replace(SVG_NS, ""),
            "fill": None if shape_el is None else shape_el.get("fill"),
            "stroke": None if shape_el is None else shape_el.get("stroke"),
            "underline": any(t.get("text-decoration") == "underline" for t in texts),
            "texts": ["".join(t.itertext()) for t in texts],
        }
    return nodes


def svg_edges(svg: str) -> dict[tuple[str, str], dict]:
    """(parent id, child id) -> {dashed, width, stroke, classes}."""
    root = ET.fromstring(svg)
    edges = {}
    for g in root.iter(f"{SVG_NS}g"):
        classes = g.get("class", "").split()
        if "edge" not in classes:
            continue
        title = g.find(f"{SVG_NS}title").text
        parent, child = title.split("->")
        path = next(g.iter(f"{SVG_NS}path"))
        edges[parent.strip(), child.strip()] = {
            "dashed": path.get("stroke-dasharray") is not None,
            "width": float(path.get("stroke-width", "1")),
            "stroke": path.get("stroke").lower(),
            "classes": classes,
        }
    return edges


def svg_clusters(svg: str) -> dict[str, dict]:
    root = ET.fromstring(svg)
    found = {}
    for g in root.iter(f"{SVG_NS}g"):
        if g.get("class") != "cluster":
            continue
        texts = ["".join(t.itertext()) for t in g.iter(f"{SVG_NS}text")]
        path = next(c for c in g.iter() if c.tag in (f"{SVG_NS}path", f"{SVG_NS}polygon"))
        found[texts[0] if texts else ""] = {"dashed": path.get("stroke-dasharray") is not None}
    return found


def mermaid_nodes(text: str) -> dict[str, tuple[str, str, str]]:
    """label (underline removed) -> (node id, shape brackets, tier class)."""
    found = {}
    for m in re.finditer(r"^\s+(\w+)(\(\[|\(\(|\(|\[)\"(.*?)\"(\]\)|\)\)|\)|\]):::(\w+)$", text, re.M):
        label = re.sub(r"</?u>", "", m.group(3)).split("<br/>")[0]
        found[label] = (m.group(1), m.group(2) + m.group(4), m.group(5))
    return found


def mermaid_links(text: str) -> dict[tuple[str, str], str]:
    return {(m.group(1), m.group(3)): m.group(2)
            for m in re.finditer(r"^\s+(\w+) (---|-\.-|===) (\w+)$", text, re.M)}


# -- notation ----------------------------------------------------------------------------------------
def test_lcms_svg_notation(lcms, needs_dot):
    d = dj.Diagram(lcms)
    svg = d.svg_string()
    nodes = svg_nodes(svg)
    # tiers by shape and colour
    assert nodes["Sample"]["tier"] == "manual" and nodes["Sample"]["shape"] == "path"  # rounded box
    assert nodes["Sample"]["fill"] == "#d7efd2"  # green
    assert nodes["Instrument"]["tier"] == "lookup" and nodes["Instrument"]["fill"] == "#e4e4e4"  # grey
    computed = [n for n in nodes.values() if n["tier"] == "computed"]
    assert computed and all(n["shape"] == "ellipse" and n["fill"] == "#fbd3c4" for n in computed)
    parts = [label for label, n in nodes.items() if n["tier"] == "part"]
    assert parts and all("." in p for p in parts)  # Master.Part, plain text
    assert all(nodes[p]["shape"] is None for p in parts)
    # underlined: tables that bring new key attributes; PeakSummary only inherits Run's key
    assert nodes["Sample"]["underline"] and nodes["Instrument"]["underline"]
    assert not nodes["PeakSummary"]["underline"]
    # edges: solid primary, dashed secondary (the nullable instrument reference), thick 1:1
    edges = svg_edges(svg)
    ids = {d.nodes[n]["label"]: n for n in d.nodes}
    ref = {(d.nodes[p]["label"], d.nodes[c]["label"]): e
           for p, c in d.edges for e in [edges[_dot_id(d, p), _dot_id(d, c)]]}
    assert ref["Instrument", "Run"]["dashed"] and "fk-renamed" in ref["Instrument", "Run"]["classes"]
    assert ref["Instrument", "Run"]["stroke"] == "#c77d3a"  # renamed (ms <- instrument_id): amber
    assert not ref["Run", "PeakSummary"]["dashed"] and ref["Run", "PeakSummary"]["width"] == 2  # 1:1
    for (parent, child), edge in ref.items():
        if d.edges[ids[parent], ids[child]]["primary"]:
            assert not edge["dashed"], (parent, child)
        else:
            assert edge["dashed"], (parent, child)
    # one dashed cluster per schema, labelled by the schema name
    clusters = svg_clusters(svg)
    assert clusters["lcms"]["dashed"]


def _dot_id(d, name):
    from joinflow.diagram import _mermaid_ids

    return _mermaid_ids(d.topo_sort())[name]


def test_university_svg_and_mermaid(university, needs_dot):
    d = dj.Diagram(university)
    nodes = svg_nodes(d.svg_string())
    assert {n for n, v in nodes.items() if v["tier"] == "lookup"} == {"Department", "Term", "LetterGrade"}
    assert nodes["Enroll"]["tier"] == "manual" and not nodes["Enroll"]["underline"]  # key from parents only
    assert nodes["Section"]["underline"]  # adds `section`
    mm = d.make_mermaid()
    assert mm.startswith("flowchart LR\n")
    mnodes = mermaid_nodes(mm)
    assert mnodes["Department"][1:] == ("()", "lookup")
    assert mnodes["Student"][1:] == ("()", "manual")
    links = mermaid_links(mm)
    by_label = {v[0]: k for k, v in mnodes.items()}
    kinds = {(by_label[a], by_label[b]): kind for (a, b), kind in links.items()}
    assert kinds["Student", "StudentMajor"] == "==="  # the whole key: one-to-one
    assert kinds["Department", "StudentMajor"] == "-.-"  # a reference outside the key
    assert kinds["LetterGrade", "Grade"] == "-.-"
    assert kinds["Section", "Enroll"] == "---"
    assert kinds["Enroll", "Grade"] == "==="
    assert mm.count("subgraph ") == 1 and 'subgraph schema_university["university"]' in mm


def test_lcms_mermaid_tiers_and_save(lcms, tmp_path):
    d = dj.Diagram(lcms)
    mm = d.make_mermaid()
    for tier in ("manual", "lookup", "imported", "computed", "part"):
        assert re.search(rf"^\s+classDef {tier} ", mm, re.M), tier
    nodes = mermaid_nodes(mm)
    assert nodes["PeakSummary"][1:] == ('([])', "computed")
    assert nodes["Sample"][1:] == ("()", "manual")
    assert any(tier == "part" for _, _, tier in nodes.values())
    assert "<u>Sample</u>" in mm and "<u>PeakSummary</u>" not in mm
    assert "linkStyle" in mm and "#C77D3A" in mm  # the renamed instrument reference
    for name in ("d.mmd", "d.mermaid"):
        path = d.save(tmp_path / name)
        assert path.read_text() == mm
    assert "digraph" in d.save(tmp_path / "d.dot").read_text()


def test_lab_dependency_kinds_on_every_backend(schema):
    lab = declare_lab(schema)
    d = dj.Diagram(schema)
    assert set(d.nodes) == {t().full_table_name for t in (lab.Rig, lab.Subject, lab.Session, lab.Trial)}
    edge = d.edges[lab.Rig().full_table_name, lab.Session().full_table_name]
    assert not edge["primary"] and edge["aliased"]
    edge = d.edges[lab.Subject().full_table_name, lab.Session().full_table_name]
    assert edge["primary"] and not edge["one_to_one"]
    assert d.nodes[lab.Trial().full_table_name]["tier"] == "Part"
    assert d.nodes[lab.Trial().full_table_name]["label"] == "Session.Trial"
    assert d.nodes[lab.Session().full_table_name]["new_dimensions"] == ["session_idx"]
    mm = d.make_mermaid()
    assert mm.count(" -.- ") == 1 and mm.count(" --- ") == 2


def test_lab_svg_nests_parts_by_master(sqlite_conn, needs_dot):
    lab = declare_lab(dj.Schema("lab", connection=sqlite_conn))
    svg = dj.Diagram(lab.Session).add_parts().svg_string()
    root = ET.fromstring(svg)
    clusters = [g for g in root.iter(f"{SVG_NS}g") if g.get("class") == "cluster"]
    family = [g for g in clusters if "family_" in (g.find(f"{SVG_NS}title").text or "")]
    assert len(family) == 1
    nodes = svg_nodes(svg)
    assert set(nodes) == {"Session", "Session.Trial"}


# -- operators -----------------------------------------------------------------------------------------
def labels(d) -> set[str]:
    return {d.nodes[n]["label"] for n in d.nodes}


def test_operators(university):
    u = university
    D = dj.Diagram
    assert labels(D(u.Enroll) - 1) == {"Enroll", "Student", "Section"}
    assert labels(D(u.Enroll) - 2) == {"Enroll", "Student", "Section", "Course", "Term"}
    assert labels(D(u.Course) + 1) == {"Course", "Section"}
    assert labels(D(u.Course) + 2) == {"Course", "Section", "Enroll"}
    assert labels(D(u.Course) + 0) == {"Course"}
    assert labels((D(u.Student) + 1) * (D(u.Department) + 1)) == {"StudentMajor"}
    assert labels(D(u) - D(u.Grade) - D(u.LetterGrade)) == labels(D(u)) - {"Grade", "LetterGrade"}
    assert labels(D(u.Student) + D(u.Term)) == {"Student", "Term"}
    # +1 -1 and -1 +1 differ
    assert labels(D(u.Section) + 1 - 1) != labels(D(u.Section) - 1 + 1)
    assert labels(D.from_sequence([u.Student, u.Term, u.Grade])) == {"Student", "Term", "Grade"}
    assert labels(D([u.Student, u.Term])) == {"Student", "Term"}
    assert labels(D(u)) == labels(D(u.schema))
    assert u.Grade in D(u) and u.Grade not in D(u.Student)
    # topological iteration: every table after its parents
    order = [t.full_table_name for t in D(u)]
    for parent, child in D(u).edges:
        assert order.index(parent) < order.index(child)
    assert [t.full_table_name for t in reversed(D(u))] == order[::-1]
    assert "Diagram of 9 tables" in repr(D(u))
    copied = D(u.Student).copy()
    assert isinstance(copied, dj.Diagram) and labels(copied + 1) == {"Student", "StudentMajor", "Enroll"}


def test_sources_from_the_database_alone(university, sqlite_conn):
    virtual = dj.VirtualModule("uni_virtual", university.schema.database, connection=sqlite_conn)
    assert labels(dj.Diagram(virtual)) == labels(dj.Diagram(university))
    free = dj.FreeTable(sqlite_conn, university.Enroll().full_table_name)
    assert labels(dj.Diagram(free) - 1) == {"Enroll", "Student", "Section"}
    assert labels(dj.Diagram(university.Enroll())) == {"Enroll"}


def test_add_parts_and_growth_reach_parts(lcms):
    run = dj.Diagram(lcms.Run)
    assert labels(run) == {"Run"}
    with_parts = run.add_parts()
    parts = labels(with_parts) - {"Run"}
    assert parts and all(p.startswith("Run.") for p in parts)
    assert labels(run + 1) >= labels(with_parts)


def test_direction_from_config(university, sqlite_conn):
    sqlite_conn.config["display.diagram_direction"] = "TB"
    d = dj.Diagram(university)
    assert d.make_mermaid().startswith("flowchart TB")
    assert "rankdir=TB" in d.make_dot().to_string()
    sqlite_conn.config["display.diagram_direction"] = "diagonal"
    with pytest.raises(dj.DataJointError, match="diagram_direction"):
        d.make_mermaid()


def test_bad_input(university, tmp_path):
    with pytest.raises(dj.DataJointError, match="Cannot make a diagram"):
        dj.Diagram("university")
    import types

    with pytest.raises(dj.DataJointError, match="no `schema` attribute"):
        dj.Diagram(types.ModuleType("empty"))
    with pytest.raises(dj.DataJointError, match="n >= 0"):
        dj.Diagram(university.Student) + -1
    with pytest.raises(TypeError):
        dj.Diagram(university.Student) + "Term"
    with pytest.raises(dj.DataJointError, match="at least one"):
        dj.Diagram.from_sequence([])
    d = dj.Diagram(university)
    with pytest.raises(dj.DataJointError, match=r"\.png, \.svg, \.mmd"):
        d.save(tmp_path / "diagram.txt")
    assert not (tmp_path / "diagram.txt").exists()


# -- Graphviz missing --------------------------------------------------------------------------------
def test_without_dot_mermaid_works_and_svg_says_what_to_install(university, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    assert not dot_available()
    d = dj.Diagram(university)
    for render in (d.svg_string, d.make_png, lambda: d.save(tmp_path / "x.svg"), lambda: d.save(tmp_path / "x.png")):
        with pytest.raises(GraphvizMissingError, match="apt-get install graphviz"):
            render()
    assert not (tmp_path / "x.svg").exists() and not (tmp_path / "x.png").exists()
    assert d.save(tmp_path / "x.mmd").read_text().startswith("flowchart")
    assert d._repr_svg_() is None and "```mermaid" in d._repr_markdown_()
    assert isinstance(GraphvizMissingError("x"), dj.DataJointError)


def test_png_and_jupyter(university, tmp_path, needs_dot):
    d = dj.Diagram(university)
    assert d.make_png().getvalue().startswith(b"\x89PNG")
    assert d.save(tmp_path / "u.png").read_bytes().startswith(b"\x89PNG")
    assert d._repr_svg_().lstrip().startswith("<?xml") and d._repr_markdown_() is None
    assert "<svg" in d.save(tmp_path / "u.svg").read_text()
    assert "<svg" in d.save(tmp_path / "u.out", format="svg").read_text()


# -- status overlay ------------------------------------------------------------------------------------
def test_status_overlay(sqlite_conn, needs_dot):
    schema = dj.Schema("status_demo", connection=sqlite_conn)

    @schema
    class Source(dj.Manual):
        definition = """
        item : varchar(8)
        """

    @schema
    class Result(dj.Computed):
        definition = """
        -> Source
        ---
        size : int32
        """

        def make(self, key):
            if key["item"] == "bad":
                raise ValueError("cannot size a bad item")
            self.insert1(dict(key, size=len(key["item"])))

    d = dj.Diagram(schema).with_status()
    assert not (Result().connection.backend.load_columns(sqlite_conn, schema.database, "~~result")), \
        "status must not declare job tables"
    Source.insert([("a",), ("bb",), ("bad",)])
    Result.populate(reserve_jobs=True, suppress_errors=True)
    Source.insert1(("new",))
    counts = d.status_counts()[Result().full_table_name]
    assert (counts["done"], counts["pending"], counts["error"]) == (2, 2, 1)
    nodes = svg_nodes(d.svg_string())
    result = nodes["Result"]
    assert "status-error" in result["classes"]
    assert "2 done · 2 pending · 1 error" in " ".join(result["texts"])
    assert "status" not in " ".join(nodes["Source"]["classes"])
    mm = d.make_mermaid()
    assert "2 done · 2 pending · 1 error" in mm and re.search(r"class \w+ status_error", mm)
    plain = dj.Diagram(schema)
    assert "pending" not in plain.make_mermaid().split("classDef status_done")[1]
    assert "pending" in dj.Diagram(schema, status=True).make_mermaid().split("classDef status_done")[1]


# -- the diagram checked into docs/ ------------------------------------------------------------------
DOCS_SVG = ROOT / "docs" / "lcms-pipeline.svg"


def test_docs_lcms_svg_is_current(lcms, needs_dot):
    """docs/lcms-pipeline.svg shows the tables of examples/lcms as they are declared now.

    After changing the example, regenerate it:
    JOINFLOW_UPDATE_DOCS_SVG=1 .venv/bin/python -m pytest tests/test_diagram.py -k docs_lcms_svg
    """
    svg = dj.Diagram(lcms).svg_string()
    if os.environ.get("JOINFLOW_UPDATE_DOCS_SVG"):
        DOCS_SVG.write_text(svg)
    assert DOCS_SVG.exists(), f"{DOCS_SVG} is missing; regenerate it (see this test's docstring)"
    want = {label: node["tier"] for label, node in svg_nodes(svg).items()}
    have = {label: node["tier"] for label, node in svg_nodes(DOCS_SVG.read_text()).items()}
    assert have == want, (f"{DOCS_SVG.name} is out of date with examples/lcms/pipeline.py; regenerate it "
                          "with JOINFLOW_UPDATE_DOCS_SVG=1 (see this test's docstring)")
    assert len(svg_edges(DOCS_SVG.read_text())) == len(svg_edges(svg))
