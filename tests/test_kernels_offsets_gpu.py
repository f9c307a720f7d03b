"""No pointer placement the launchers accept can fault the device.

Each launcher runs in a child process (tests/_kernel_offsets.py) with each of its array
arguments, inputs and outputs alike, placed 2, 4 and 8 bytes past an aligned address and
a fraction of an element past it: every launch either computes the NumPy reference's
result or raises ArgumentError naming the argument. A child isolates a device fault (it
cannot poison this process or hide behind a later test) and reports its cases on stderr.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.gpu

TESTS = Path(__file__).resolve().parent
CHILD = ("import sys; sys.path.insert(0, sys.argv[1]); import _kernel_offsets; "
         "sys.exit(_kernel_offsets.main(sys.argv[2:]))")
LAUNCHERS = ["embedding", "rms_norm", "silu_and_mul", "argmax", "rotary_embedding", "reshape_and_cache", "feed_tokens",
             "gemm", "paged_attention", "varlen_attention"]


@pytest.fixture(scope="module")
def compiled():
    """Compile (or check the cache of) every kernel once, before the children start."""
    import cgraph.kernels as K

    return K.precompile()


@pytest.mark.parametrize("launcher", LAUNCHERS)
def test_every_pointer_at_any_offset_runs_correctly_or_is_rejected(compiled, launcher):
    proc = subprocess.run([sys.executable, "-c", CHILD, str(TESTS), launcher], capture_output=True, text=True,
                          timeout=300, cwd=TESTS.parent)
    assert proc.returncode == 0, (f"{launcher}: child exited {proc.returncode} (3: a device fault)\n"
                                  f"stdout:\n{proc.stdout[-2000:]}\nstderr:\n{proc.stderr[-8000:]}")
    assert " cases, 0 failed" in proc.stdout, proc.stdout
