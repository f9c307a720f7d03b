"""The demo's CPU path: the simulated schedule obeys its limits, the plan prints per mode."""

from __future__ import annotations

import io
import random
import subprocess
import sys

import pytest

from cgraph import GraphMode
from cgraph.demo import main, parse_args, print_plan, simulate_steps


@pytest.mark.parametrize("trial", range(5))
def test_schedule_respects_limits_and_processes_every_token(trial):
    rng = random.Random()
    requests, max_prompt = rng.randint(1, 40), rng.randint(1, 300)
    new_tokens, seqs, budget = rng.randint(1, 20), rng.randint(1, 16), rng.randint(16, 512)
    seed = rng.randint(0, 10**6)
    steps = simulate_steps(requests, max_prompt, new_tokens, seqs, budget, seed)
    assert steps == simulate_steps(requests, max_prompt, new_tokens, seqs, budget, seed)
    total = sum(s.num_tokens for s in steps)
    assert all(1 <= s.num_tokens <= budget for s in steps)
    assert all(1 <= s.num_reqs <= s.num_tokens for s in steps)
    for s in steps:
        if s.uniform:
            assert s.num_tokens == s.num_reqs <= seqs
    # Every prompt token and every decode token after the first sampled one is computed.
    rng2 = random.Random(seed)
    arrivals = [(rng2.randrange(max(requests, 1)), rng2.randint(1, max_prompt)) for _ in range(requests)]
    assert total == sum(p for _, p in arrivals) + requests * (new_tokens - 1)


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
        assert report.batches == len(simulate_steps(12, 100, 9, 8, 256, 0))
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
