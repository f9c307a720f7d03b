"""The demo's CPU path: the plan is the engine's schedule, printed per mode."""

from __future__ import annotations

import io
import subprocess
import sys

import pytest

from cgraph import GraphMode
from cgraph.demo import main, parse_args, print_plan
from cgraph.engine.workload import demo_max_seq_len, plan_batches, synthetic_requests


def test_plan_is_the_engine_schedule_of_the_gpu_run():
    """The CPU plan dispatches exactly the batches the GPU engine will run."""
    args = parse_args(["--no-gpu", "--requests", "10", "--max-prompt", "60", "--new-tokens", "4",
                       "--max-num-seqs", "4", "--max-num-batched-tokens", "64", "--modes", "full"])
    requests = synthetic_requests(10, max_prompt=60, new_tokens=4, vocab_size=2, seed=0)
    batches = plan_batches(requests, max_num_seqs=4, max_num_batched_tokens=64,
                           max_seq_len=demo_max_seq_len(60, 4))
    report = print_plan(args, io.StringIO())[GraphMode.FULL]
    assert report.batches == len(batches)
    assert report.real_tokens == sum(n for n, _ in batches) == sum(len(r.prompt) + 3 for r in requests)


def test_plan_prints_every_requested_mode():
    args = parse_args(["--no-gpu", "--requests", "12", "--max-prompt", "100", "--new-tokens", "9",
                       "--max-num-seqs", "8", "--max-num-batched-tokens", "256",
                       "--modes", "full,FULL_AND_PIECEWISE"])
    out = io.StringIO()
    reports = print_plan(args, out)
    text = out.getvalue()
    assert set(reports) == {GraphMode.FULL, GraphMode.FULL_AND_PIECEWISE}
    assert "\nFULL: " in text and "\nFULL_AND_PIECEWISE: " in text and "\nPIECEWISE: " not in text
    for report in reports.values():
        assert f"hit rate {report.hit_rate:.1%}" in text
        assert report.batches == len(plan_batches(
            synthetic_requests(12, max_prompt=100, new_tokens=9, vocab_size=2, seed=0),
            max_num_seqs=8, max_num_batched_tokens=256, max_seq_len=demo_max_seq_len(100, 9)))
    assert "GPU run" in text


def test_bad_flags_exit_with_a_message(capsys):
    with pytest.raises(SystemExit):
        parse_args(["--modes", "fastest"])
    assert "unknown graph mode 'fastest'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse_args(["--requests", "0"])
    assert "--requests must be >= 1" in capsys.readouterr().err


def test_main_without_gpu_prints_the_plan(capsys):
    assert main(["--no-gpu", "--requests", "6", "--max-prompt", "40", "--new-tokens", "5"]) == 0
    text = capsys.readouterr().out
    for mode in GraphMode:
        assert f"\n{mode.name}: " in text


def test_module_runs_as_a_script():
    proc = subprocess.run([sys.executable, "-m", "cgraph.demo", "--no-gpu", "--requests", "4"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "FULL_AND_PIECEWISE" in proc.stdout and "hit rate" in proc.stdout
