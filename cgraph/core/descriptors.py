"""BatchDescriptor: the key that names one captured graph.

A descriptor says which padded batch shape a graph was captured for. Dispatch turns the
facts of a real batch into a descriptor, and a runner keeps one graph per descriptor,
so descriptors are frozen, hashable values.
"""

from __future__ import annotations

import attrs

from cgraph.core.checks import bool_converter, int_converter, optional_int_converter
from cgraph.core.errors import ArgumentError


def _check_num_reqs(instance: "BatchDescriptor", attribute: attrs.Attribute, value: int | None) -> None:
    # A request has at least one token, so a batch cannot hold more requests than tokens.
    if value is not None and value > instance.num_tokens:
        raise ArgumentError(
            f"BatchDescriptor.num_reqs={value} exceeds num_tokens={instance.num_tokens}; "
            "every request has at least one token, so pass num_reqs <= num_tokens"
        )


@attrs.frozen
class BatchDescriptor:
    """The shape of a (padded) batch that a graph is captured for.

    - ``num_tokens``: tokens in the batch (after padding, for a graph key).
    - ``num_reqs``: requests in the batch, or None when the graph does not depend on it
      (mixed-batch graphs).
    - ``uniform``: True for a uniform decode batch (every request has the same query
      length), which FULL decode graphs specialise on.
    - ``has_lora`` / ``num_active_loras``: whether LoRA adapters are active, and how many
      distinct ones (graphs may be specialised on the count).
    """

    num_tokens: int = attrs.field(
        converter=int_converter("BatchDescriptor.num_tokens", 1, hint="a batch has at least 1 token")
    )
    num_reqs: int | None = attrs.field(
        default=None,
        converter=optional_int_converter("BatchDescriptor.num_reqs", 1, hint="or None when unknown"),
        validator=_check_num_reqs,
    )
    uniform: bool = attrs.field(default=False, converter=bool_converter("BatchDescriptor.uniform"))
    has_lora: bool = attrs.field(default=False, converter=bool_converter("BatchDescriptor.has_lora"))
    num_active_loras: int = attrs.field(
        default=0, converter=int_converter("BatchDescriptor.num_active_loras", 0)
    )

    def relax_for_mixed(self) -> "BatchDescriptor":
        """The descriptor a mixed-batch graph uses: num_reqs and uniform dropped, LoRA kept.

        A graph captured for mixed batches serves any batch with this many tokens,
        whatever its request count or uniformity.
        """
        return BatchDescriptor(
            self.num_tokens, None, False, self.has_lora, self.num_active_loras
        )


def eager_descriptor(num_tokens: int) -> BatchDescriptor:
    """``BatchDescriptor(num_tokens)`` for an int already known to be >= 1, without checks.

    Dispatch answers every batch above the largest capture size with such a descriptor;
    skipping the converters keeps that answer cheap on the hot path.
    """
    desc = object.__new__(BatchDescriptor)
    # attrs frozen classes are written the same way internally (object.__setattr__).
    for name, value in (("num_tokens", num_tokens), ("num_reqs", None), ("uniform", False),
                        ("has_lora", False), ("num_active_loras", 0)):
        object.__setattr__(desc, name, value)
    return desc
