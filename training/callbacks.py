"""A TrainerCallback that reports each logged step (TRL's metrics, tokens/s) and stops on cancellation."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

from accelerate.utils import broadcast_object_list
from transformers import TrainerCallback

# TRL's log keys -> the names the store and the dashboard use.
METRIC_KEYS = {
    "loss": "loss",
    "rewards/accuracies": "reward_accuracy",
    "rewards/margins": "reward_margin",
    "rewards/chosen": "reward_chosen",
    "rewards/rejected": "reward_rejected",
    "learning_rate": "learning_rate",
    "grad_norm": "grad_norm",
    "mean_token_accuracy": "token_accuracy",
}

# report(step, values) stores one step and returns True when the run should stop (cancelled).
Reporter = Callable[[int, dict[str, Any]], bool]


class ProgressCallback(TrainerCallback):
    def __init__(self, report: Reporter):
        self.report = report
        self.cancelled = False
        self.tokens_per_s: list[float] = []
        self._last_time = time.perf_counter()
        self._last_tokens = 0

    def on_train_begin(self, args, state, control, **kwargs):
        self._last_time, self._last_tokens = time.perf_counter(), state.num_input_tokens_seen

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs or "train_loss" in logs:  # the end-of-training summary is not a step
            return
        # Every number TRL logged (what MLflow shows), the usual ones under the names the dashboard uses.
        values = {METRIC_KEYS.get(key, key): float(value) for key, value in logs.items()
                  if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)}
        now, tokens = time.perf_counter(), state.num_input_tokens_seen
        if tokens > self._last_tokens and now > self._last_time:
            values["tokens_per_s"] = (tokens - self._last_tokens) / (now - self._last_time)
            self.tokens_per_s.append(values["tokens_per_s"])
        self._last_time, self._last_tokens = now, tokens
        values["epoch"] = float(state.epoch or 0)
        if agreed(self.report(state.global_step, values)):
            self.cancelled = True
            control.should_training_stop = True


def agreed(stop: bool) -> bool:
    """Rank 0's decision on every rank: under `accelerate launch` only rank 0 reads the database, and a
    rank that stopped alone would leave the others waiting forever in their next gradient all-reduce."""
    return broadcast_object_list([stop], from_process=0)[0]
