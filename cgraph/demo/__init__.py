"""`python -m cgraph.demo`: how a serving workload uses CUDA graphs, per graph mode.

Without a GPU (or with --no-gpu) it prints the dispatch plan of a synthetic workload
(cgraph.demo.plan); on a CUDA machine it serves the workload on a small decoder in every
mode and checks the tokens against eager execution (cgraph.demo.gpu).
"""

from cgraph.demo.plan import main, parse_args, print_plan

__all__ = ["main", "parse_args", "print_plan"]
