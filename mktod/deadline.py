"""When a training loop given a deadline (``--max-time``) should stop: the one rule both loops use."""

from __future__ import annotations

import time


def past_deadline(
    deadline: float | None, step_started: float, eval_s: float = 0.0, evaluates_now: bool = False
) -> bool:
    """Whether going on past the step that began at ``step_started`` would end past ``deadline``
    (a ``time.monotonic()`` time; None: no deadline).

    Going on costs this step's own evaluation when one is due (``evaluates_now``), another step as long
    as this one, and a final evaluation as long as the last one (``eval_s``), so a loop that stops when
    this says so ends by the deadline, its last evaluation included.
    """
    if deadline is None:
        return False
    now = time.monotonic()
    return now + (eval_s if evaluates_now else 0.0) + (now - step_started) + eval_s > deadline
