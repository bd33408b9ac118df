"""Pending injected faults, which every simulator keeps: each holds for its next ``count`` matching calls."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, TypeVar


class CountedFault(Protocol):
    count: int  # calls it still holds for


FaultT = TypeVar("FaultT", bound=CountedFault)


def take(pending: list[FaultT], matches: Callable[[FaultT], bool]) -> FaultT | None:
    """The first of ``pending`` that ``matches`` this call, which uses up one of its ``count`` (one used up
    leaves ``pending``); None when none matches."""
    for index, fault in enumerate(pending):
        if matches(fault):
            fault.count -= 1
            if fault.count <= 0:
                del pending[index]
            return fault
    return None
