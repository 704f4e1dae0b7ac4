"""Schedules for the training losses: eps ramped over optimisation steps.

A loss with a schedule exposes ``on_step(step)``; the training loop calls it before every step
with the global step count, so the schedule survives an interrupted and resumed run.
"""
from __future__ import annotations

from typing import Callable

__all__ = ["linear_ramp", "ScheduledEps"]


def linear_ramp(start: float, end: float, ramp_steps: int, warmup_steps: int = 0) -> Callable[[int], float]:
    """A schedule ``f(step)``: ``start`` for ``warmup_steps``, then linear to ``end`` over
    ``ramp_steps`` steps, then ``end`` (the eps schedule of adversarial/certified training)."""
    if ramp_steps < 0 or warmup_steps < 0:
        raise ValueError("ramp_steps and warmup_steps must be >= 0")

    def schedule(step: int) -> float:
        if step < warmup_steps:
            return start
        if ramp_steps == 0 or step >= warmup_steps + ramp_steps:
            return end
        return start + (end - start) * (step - warmup_steps) / ramp_steps

    return schedule


class ScheduledEps:
    """Base of the losses whose radius follows :func:`linear_ramp`.

    ``eps`` (float, input units) is the radius in force at the current step: ``start_eps`` for
    ``warmup_steps`` steps, then linear to ``eps_max`` over ``ramp_steps`` steps.
    """

    def __init__(self, eps: float, ramp_steps: int = 0, warmup_steps: int = 0, start_eps: float = 0.0):
        if eps < 0 or start_eps < 0:
            raise ValueError(f"eps and start_eps must be >= 0, got {eps} and {start_eps}")
        self.eps_max = float(eps)
        self.schedule = linear_ramp(float(start_eps), float(eps), int(ramp_steps), int(warmup_steps))
        self.eps = self.schedule(0)

    def on_step(self, step: int) -> None:
        """Set ``eps`` for global optimisation step ``step`` (called by the loop before it)."""
        self.eps = self.schedule(step)
