"""Encoder graph configuration: which token budgets to capture and how many items a batch holds.

Like vLLM, either the user names the budgets and the maximum items per batch, or they are
derived: budgets from a (min, max) token range by `generate_budgets`, the batch size from
the smallest item the model can produce. The maximum batch size never exceeds the
smallest budget (every item has at least one token, and a graph's per-item metadata is
sized by it). Pure: no CuPy.
"""

from __future__ import annotations

from collections.abc import Sequence

import attrs

from cgraph.core.budgets import generate_budgets
from cgraph.core.checks import check_int, check_sizes, int_converter
from cgraph.core.errors import ArgumentError


def _budgets_converter(value: Sequence[int]) -> tuple[int, ...]:
    return check_sizes(value, "EncoderGraphConfig.budgets",
                       hint="one token budget per graph, e.g. (256, 1024)")


@attrs.frozen
class EncoderGraphConfig:
    """Validated encoder graph settings.

    budgets: strictly ascending token budgets, one graph each;
    max_batch_size: most items packed into one graph replay (<= the smallest budget).
    """

    budgets: tuple[int, ...] = attrs.field(converter=_budgets_converter)
    max_batch_size: int = attrs.field(converter=int_converter(
        "EncoderGraphConfig.max_batch_size", 1, hint="a batch holds at least 1 item"))

    def __attrs_post_init__(self) -> None:
        if self.max_batch_size > self.budgets[0]:
            raise ArgumentError(
                f"max_batch_size ({self.max_batch_size}) exceeds the smallest budget "
                f"({self.budgets[0]}); every item has at least one token, so pass "
                f"max_batch_size <= {self.budgets[0]} or raise the smallest budget"
            )

    @property
    def max_budget(self) -> int:
        return self.budgets[-1]

    @property
    def min_budget(self) -> int:
        return self.budgets[0]


def resolve_encoder_config(
    *,
    budgets: Sequence[int] | None = None,
    max_batch_size: int | None = None,
    min_budget: int | None = None,
    max_budget: int | None = None,
    min_item_tokens: int = 1,
) -> EncoderGraphConfig:
    """Build an EncoderGraphConfig from user settings, deriving what is left out.

    - budgets: used as given (sorted and de-duplicated first) when passed; otherwise
      `generate_budgets(min_budget, max_budget)`, both then required. Passing budgets
      together with min/max_budget is an error (ambiguous).
    - max_batch_size: used as given when passed (must be <= the smallest budget);
      otherwise as many minimum-size items (`min_item_tokens`) as the largest budget
      holds, capped at the smallest budget.
    """
    if budgets is not None:
        if min_budget is not None or max_budget is not None:
            raise ArgumentError(
                "pass either budgets or (min_budget, max_budget), not both: got "
                f"budgets={budgets!r}, min_budget={min_budget!r}, max_budget={max_budget!r}"
            )
        ladder = check_sizes(budgets, "budgets", sort=True,
                             hint="each budget is a token count, e.g. budgets=(256, 1024)")
    else:
        if min_budget is None or max_budget is None:
            raise ArgumentError(
                "no budgets given: pass budgets=(...) or both min_budget and max_budget "
                f"(got min_budget={min_budget!r}, max_budget={max_budget!r})"
            )
        ladder = generate_budgets(min_budget, max_budget)
    min_item_tokens = check_int(min_item_tokens, "min_item_tokens", 1,
                                hint="the fewest output tokens an item can have")
    if max_batch_size is None:
        max_batch_size = max(1, min(ladder[0], ladder[-1] // min_item_tokens))
    return EncoderGraphConfig(ladder, max_batch_size)
