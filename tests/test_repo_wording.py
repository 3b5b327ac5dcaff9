"""The repository speaks of the product, not of how it was made: no text file (outside the
benchmark and example result folders, which hold raw logs) speaks of the working periods,
borrowed machines, metered accelerator time or tracker tickets behind it. Words are matched
whole, so API names such as subprocess's start_new_session do not count, nor does the verb in
"Triton issues 16-byte loads"."""

import os
import re
import subprocess

import pytest

from conftest import ROOT

# Pieces joined at run time, so this file does not match itself.
WORDS = re.compile("|".join([
    r"\bsess" + r"ions?\b",
    r"\blent" + r"\s",
    r"\bdevice" + r"\s+time\b",
    r"\bissue" + r"\s+[0-9#]",
]), re.I)
EXCLUDED = re.compile(r"^(\.git/|benchmarks/results/|examples/[^/]+/results/)")


def _files():
    if not os.path.isfile(os.path.join(ROOT, "README.md")):
        pytest.skip("not run from a source tree")
    try:
        out = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=ROOT, capture_output=True, check=True).stdout
        tracked = set(subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True,
                                     check=True).stdout.decode().split("\0"))
        # untracked files count too (what would be committed next), except in hidden folders
        # (local scratch such as archives and wheels beside the tree)
        return [p for p in out.decode().split("\0")
                if p and (p in tracked or not p.split("/")[0].startswith("."))]
    except (OSError, subprocess.CalledProcessError):  # no git: walk, skipping build output
        files = []
        for d, dirs, names in os.walk(ROOT):
            dirs[:] = [x for x in dirs if not x.startswith(".") and x not in ("build", "dist")
                       and not x.endswith(".egg-info") and x != "__pycache__"]
            files += [os.path.relpath(os.path.join(d, n), ROOT) for n in names]
        return files


def test_no_words_about_how_the_project_was_made():
    hits = []
    for rel in _files():
        if EXCLUDED.match(rel.replace(os.sep, "/")):
            continue
        path = os.path.join(ROOT, rel)
        if not os.path.isfile(path):
            continue
        with open(path, "rb") as f:
            data = f.read()
        if b"\0" in data:  # binary
            continue
        text = data.decode("utf-8", errors="replace")
        for n, line in enumerate(text.splitlines(), 1):
            if WORDS.search(line):
                hits.append(f"{rel}:{n}: {line.strip()[:120]}")
    assert not hits, "\n".join(hits)
