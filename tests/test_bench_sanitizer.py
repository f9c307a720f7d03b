"""The sanitizer summary reads .ci/gpu's per-part logs and refuses incomplete or failing runs."""

from __future__ import annotations

import json

from cgraph.bench import sanitizer

MEMCHECK_OK = """........ [100%]
72 passed, 1 skipped, 453 deselected in 57.89s
========= ERROR SUMMARY: 0 errors
"""
RACECHECK_BAD = """.....F [100%]
1 failed, 63 passed, 220 deselected in 76.93s
========= RACECHECK SUMMARY: 2 hazards displayed (1 errors, 1 warnings)
"""


def _part(root, name, text):
    d = root / name
    d.mkdir()
    (d / "out.txt").write_text(text)
    return d


def test_summarize_reads_pytest_and_tool_lines(tmp_path):
    row = sanitizer.summarize(_part(tmp_path, "memcheck-rest", MEMCHECK_OK))
    assert row == {"tool": "memcheck", "part": "rest", "tests_passed": 72, "tests_failed": 0, "tests_skipped": 1,
                   "sanitizer_errors": 0, "summary_found": True}
    row = sanitizer.summarize(_part(tmp_path, "racecheck-kernels-attention", RACECHECK_BAD))
    assert (row["tests_passed"], row["tests_failed"], row["sanitizer_errors"]) == (63, 1, 1)


def test_main_fails_on_errors_and_on_a_part_without_summaries(tmp_path):
    out = tmp_path / "results"
    _part(tmp_path, "memcheck-rest", MEMCHECK_OK)
    assert sanitizer.main([str(tmp_path), "--out", str(out)]) == 0
    data = json.loads((out / "sanitizer.json").read_text())
    assert [r["sanitizer_errors"] for r in data["rows"]] == [0]
    _part(tmp_path, "racecheck-kernels-other", "killed by timeout\n")
    assert sanitizer.main([str(tmp_path), "--out", str(out)]) == 1
    assert sanitizer.main([str(tmp_path / "nothing-here"), "--out", str(out)]) == 2

