"""Load shapes for ``loadtest/locustfile.py``, chosen with ``R2END_LT_SHAPE=step|soak``.

* ``step``: ``R2END_LT_STEP_USERS`` more users every ``R2END_LT_STEP_SECONDS`` up to
  ``R2END_LT_MAX_USERS`` (then stop): watch throughput flatten and latency climb to find saturation.
* ``soak``: ``R2END_LT_SOAK_USERS`` users for ``R2END_LT_SOAK_SECONDS`` after a
  ``R2END_LT_RAMP_SECONDS`` ramp: constant load to catch leaks, drift and slow degradation.

Without ``R2END_LT_SHAPE`` no shape is defined and Locust's ``-u/-r/-t`` apply.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from locust import LoadTestShape


class StepLoadShape(LoadTestShape):
    """``step_users`` more users every ``step_seconds`` until ``max_users`` has run one step."""

    abstract = True  # only the configured subclass made by :func:`shape_from_env` is picked up by Locust
    step_users = 4
    step_seconds = 30.0
    max_users = 64

    def tick(self) -> tuple[int, float] | None:
        step = int(self.get_run_time() // self.step_seconds) + 1
        users = step * self.step_users
        if users > self.max_users:
            return None
        return users, float(self.step_users)  # each step's users start within a second


class SoakShape(LoadTestShape):
    """``users`` users for ``seconds`` (plus a ``ramp_seconds`` ramp), then stop."""

    abstract = True
    users = 16
    seconds = 600.0
    ramp_seconds = 10.0

    def tick(self) -> tuple[int, float] | None:
        if self.get_run_time() > self.ramp_seconds + self.seconds:
            return None
        return self.users, max(1.0, self.users / max(self.ramp_seconds, 1e-9))


def shape_from_env(environ: Mapping[str, str] = os.environ) -> type[LoadTestShape] | None:
    """The shape class named by ``R2END_LT_SHAPE`` with its parameters from the environment, or None."""
    name = environ.get("R2END_LT_SHAPE", "").strip().lower()
    if not name or name == "none":
        return None
    if name == "step":
        return type(
            "StepLoad",
            (StepLoadShape,),
            {
                "step_users": int(environ.get("R2END_LT_STEP_USERS", StepLoadShape.step_users)),
                "step_seconds": float(environ.get("R2END_LT_STEP_SECONDS", StepLoadShape.step_seconds)),
                "max_users": int(environ.get("R2END_LT_MAX_USERS", StepLoadShape.max_users)),
            },
        )
    if name == "soak":
        return type(
            "Soak",
            (SoakShape,),
            {
                "users": int(environ.get("R2END_LT_SOAK_USERS", SoakShape.users)),
                "seconds": float(environ.get("R2END_LT_SOAK_SECONDS", SoakShape.seconds)),
                "ramp_seconds": float(environ.get("R2END_LT_RAMP_SECONDS", SoakShape.ramp_seconds)),
            },
        )
    raise ValueError(f"R2END_LT_SHAPE={name!r}: expected step, soak or none")
