"""Every ```python block in docs/*.md runs.

Each Markdown file's blocks run in order, in one fresh Python process, in a fresh temporary
working directory, on the SQLite default (no DJ_*/JOINFLOW_* variables): each file starts
from an empty database, so its schema names are fresh.  A block whose fence reads
```python skip is not run (it needs a server, an object store in the cloud or an
orchestrator); ```python dot blocks need Graphviz's ``dot`` (skipped locally without it,
failed under CI=true, like the database fixtures).  A failure names the file, the block
number and its line.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from joinflow import testing
from joinflow.diagram import dot_available

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
FENCE = re.compile(r"^(?P<indent> *)(?P<fence>```+|~~~+)(?P<info>[^`\n]*)$")

RUNNER = textwrap.dedent("""
    import json, sys, traceback
    blocks = json.load(open(sys.argv[1]))
    namespace = {"__name__": "__main__"}
    for number, line, code in blocks:
        try:
            exec(compile(code, f"{sys.argv[2]} block {number} (line {line})", "exec"), namespace)
        except BaseException:
            traceback.print_exc()
            print(f"DOCS-BLOCK-FAILED {number} {line}", flush=True)
            sys.exit(1)
    print("DOCS-OK", flush=True)
""")


@dataclass
class Block:
    number: int  # 1-based among the file's code blocks of any language
    line: int  # line of the opening fence
    info: str
    code: str

    @property
    def words(self) -> list[str]:
        return self.info.split()

    @property
    def is_python(self) -> bool:
        return bool(self.words) and self.words[0] in ("python", "py")

    @property
    def runs(self) -> bool:
        return self.is_python and "skip" not in self.words[1:]


def code_blocks(text: str) -> list[Block]:
    blocks: list[Block] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        fence, indent, start = m.group("fence"), len(m.group("indent")), i
        body = []
        i += 1
        while i < len(lines) and not (lines[i].strip().startswith(fence) and lines[i].strip().strip(fence[0]) == ""):
            body.append(lines[i][indent:] if lines[i][:indent].strip() == "" else lines[i])
            i += 1
        blocks.append(Block(len(blocks) + 1, start + 1, m.group("info").strip(), "\n".join(body) + "\n"))
        i += 1
    return blocks


def doc_files() -> list[Path]:
    return sorted(DOCS.glob("*.md"))


def clean_env(tmp_path: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJ_", "JOINFLOW_"))}
    env["HOME"] = str(tmp_path / "home")
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "tests")] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    return env


def run_blocks(path_label: str, blocks: list[Block], tmp_path: Path) -> subprocess.CompletedProcess:
    work = tmp_path / "work"
    work.mkdir()
    (tmp_path / "home").mkdir(exist_ok=True)
    spec = tmp_path / "blocks.json"
    spec.write_text(json.dumps([[b.number, b.line, b.code] for b in blocks]))
    return subprocess.run([sys.executable, "-c", RUNNER, str(spec), path_label], cwd=work, env=clean_env(tmp_path),
                          capture_output=True, text=True, timeout=300)


def failure_message(path_label: str, blocks: list[Block], result: subprocess.CompletedProcess) -> str:
    m = re.search(r"DOCS-BLOCK-FAILED (\d+) (\d+)", result.stdout)
    if not m:
        return f"{path_label}: the blocks did not finish (exit {result.returncode}):\n{result.stdout}\n{result.stderr}"
    number, line = int(m.group(1)), int(m.group(2))
    code = next(b.code for b in blocks if b.number == number)
    return (f"{path_label}: code block {number} (line {line}) failed.\n--- block ---\n{code}--- error ---\n"
            f"{result.stderr[-4000:]}\nIf it cannot run offline, mark its fence ```python skip.")


def _runnable(path: Path) -> list[Block]:
    return [b for b in code_blocks(path.read_text()) if b.runs]


def _needs_missing_dot(blocks: list[Block]) -> bool:
    return any("dot" in b.words[1:] for b in blocks) and not dot_available()


@pytest.fixture(scope="module")
def doc_runs(tmp_path_factory):
    """Start every page's process at once (they mostly wait on imports); results by file name."""
    pool = ThreadPoolExecutor(max_workers=max(2, min(4, os.cpu_count() or 2)))
    futures = {}
    for path in doc_files():
        blocks = _runnable(path)
        if blocks and not _needs_missing_dot(blocks):
            futures[path.name] = pool.submit(run_blocks, f"docs/{path.name}", blocks,
                                             tmp_path_factory.mktemp(path.stem))
    yield futures
    pool.shutdown(wait=True)


@pytest.mark.parametrize("path", doc_files(), ids=lambda p: p.name)
def test_doc_code_blocks_run(path, doc_runs):
    blocks = _runnable(path)
    if not blocks:
        pytest.skip(f"{path.name} has no python blocks to run")
    if _needs_missing_dot(blocks):
        message = (f"{path.name} has ```python dot blocks and Graphviz's `dot` is not installed "
                   "(apt-get install graphviz)")
        if testing.IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    label = f"docs/{path.name}"
    result = doc_runs[path.name].result()
    assert result.returncode == 0 and "DOCS-OK" in result.stdout, failure_message(label, blocks, result)


def test_every_python_block_is_run_or_marked():
    """A python block is either run or explicitly skipped; no silently unrecognised fences."""
    problems = []
    for path in doc_files():
        for b in code_blocks(path.read_text()):
            if b.is_python and set(b.words[1:]) - {"skip", "dot"}:
                problems.append(f"docs/{path.name} block {b.number} (line {b.line}): unknown fence words {b.info!r}")
            if not b.info and re.search(r"^\s*(import |from \w+ import |dj\.)", b.code, re.M):
                problems.append(f"docs/{path.name} block {b.number} (line {b.line}) looks like Python "
                                "but its fence has no language: write ```python (or ```python skip)")
    assert not problems, "\n".join(problems)


def test_runner_names_file_and_block(tmp_path):
    text = "# t\n\n```python\nx = 1\n```\n\n```bash\necho no\n```\n\n```python skip\nraise SystemExit(3)\n```\n\n" \
           "```python\nassert x == 2, 'x is 1'\n```\n"
    blocks = code_blocks(text)
    assert [b.number for b in blocks] == [1, 2, 3, 4] and [b.runs for b in blocks] == [True, False, False, True]
    assert blocks[3].line == 15
    runnable = [b for b in blocks if b.runs]
    result = run_blocks("docs/t.md", runnable, tmp_path)
    assert result.returncode == 1
    message = failure_message("docs/t.md", runnable, result)
    assert "docs/t.md: code block 4 (line 15) failed" in message and "x is 1" in message
