"""The local-cluster worker setup hook drops exactly Ray Train's state-API noise, nothing else it logs."""

from __future__ import annotations

import logging

from core.ray_conn import STATE_API_NOISE, quiet_state_api_warnings

CLEANER = "ray.train.v2._internal.execution.controller.placement_group_cleaner"


def test_only_the_state_api_warning_is_dropped() -> None:
    quiet_state_api_warnings()
    logger = logging.getLogger(CLEANER)

    def record(msg: str) -> logging.LogRecord:
        return logger.makeRecord(CLEANER, logging.WARNING, __file__, 1, msg, None, None)

    assert not logger.filter(record(f"{STATE_API_NOISE}. State API may be temporarily unavailable."))
    assert logger.filter(record("Controller actor died; removing placement group pg-1"))
