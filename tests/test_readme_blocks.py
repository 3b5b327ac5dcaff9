"""Every Python block of README.md, docs/api.md and docs/deploying.md runs as pasted.

Blocks pick their device (`"cuda" if torch.cuda.is_available() else "cpu"`), so CI runs them on
the CPU and a GPU machine on CUDA. Each runs alone, in a fresh namespace, as a reader pasting
that one block would. An HTML comment on the line before a block changes how it is checked:

    <!-- readme-test: syntax-only (why) -->   compiled, not run (needs torchrun, a GPU, ...)
    <!-- readme-test: needs MODULE -->         run when MODULE imports, else skipped

Also: the README's test command is the one CI runs, and relative links in these files resolve.
"""

import os
import re
import warnings

import pytest

from conftest import ROOT

DOCS = ["README.md", "docs/api.md", "docs/deploying.md", "docs/design.md",
        "docs/performance.md", "examples/single_cell/README.md", "examples/serving/README.md"]
RUN = ["README.md", "docs/api.md", "docs/deploying.md"]  # files whose python blocks run
TEST_COMMAND = 'pip install ".[test]" && pytest -q tests'
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)
MARK = re.compile(r"<!--\s*readme-test:\s*(syntax-only|needs\s+([\w.]+)).*?-->\s*\n\Z")


def _read(rel):
    path = os.path.join(ROOT, rel)
    if not os.path.isfile(path):  # tests copied away from the source tree (wheel checks)
        pytest.skip(f"{rel} is not beside the tests")
    with open(path, encoding="utf-8") as f:
        return f.read()


def _blocks():
    out = []
    for rel in RUN:
        path = os.path.join(ROOT, rel)
        if not os.path.isfile(path):
            continue
        with open(path, encoding="utf-8") as f:
            text = f.read()
        for m in BLOCK.finditer(text):
            line = text.count("\n", 0, m.start()) + 2  # the block's first code line
            before = text[:m.start()].rsplit("\n", 2)
            mark = MARK.search("\n".join(before[-2:]) + "\n") if len(before) >= 2 else None
            out.append(pytest.param(rel, line, m.group(1), mark and mark.group(1),
                                    mark and mark.group(2), id=f"{rel}:{line}"))
    return out or [pytest.param(None, 0, "", None, None, id="no-docs")]


@pytest.mark.parametrize("rel, line, code, mark, module", _blocks())
def test_python_block_runs(rel, line, code, mark, module):
    if rel is None:
        pytest.skip("README.md and docs/ are not beside the tests")
    compiled = compile(code, f"{rel}:{line}", "exec")
    if mark == "syntax-only":
        return
    if module:
        pytest.importorskip(module)
    # a block that names CUDA must fall back to the CPU, or CI cannot run it
    if re.search(r"[\"']cuda[\"']", code):
        assert "torch.cuda.is_available()" in code, f"{rel}:{line} hard-codes CUDA"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.script's deprecation notice
        exec(compiled, {"__name__": "__main__"})


def test_readme_test_command_is_what_ci_runs():
    readme = _read("README.md")
    ci = _read(".ci/run")
    assert TEST_COMMAND in readme and TEST_COMMAND in ci


def test_relative_links_resolve():
    link = re.compile(r"\]\(([^)#\s]+)(#[^)\s]*)?\)")
    missing = []
    for rel in DOCS:
        text = _read(rel)
        for target, _ in link.findall(text):
            if re.match(r"[a-z]+:", target):  # http:, https:, mailto:
                continue
            path = os.path.normpath(os.path.join(ROOT, os.path.dirname(rel), target))
            if not os.path.exists(path):
                missing.append(f"{rel}: {target}")
    assert not missing, missing
