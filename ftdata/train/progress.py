"""What `ftdata train` shows while it trains: a Rich progress bar with the current loss, and one
row per evaluation in a compact table.

    training ━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━ 30/30 0:01:41 0:00:00  loss 1.912
     step  eval loss  perplexity  token accuracy
        0     2.8818       17.85           0.509
       30     2.1040        8.20           0.561

A DPO/KTO run's table shows the reward margin (chosen - rejected) and, for DPO, the share of
pairs whose chosen reward is the higher one, instead of the perplexity and token accuracy. A GRPO
run's bar shows the mean reward of the last logged step's completions beside the loss, and its
table the eval completions' mean reward and its spread.

This replaces transformers' printer callbacks (which print every log as a raw dict between
tqdm bars). The raw logs are kept in `run.json` (`log_history`) and, with `verbose=True`,
also printed as they come. Only the main process shows anything.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from ftdata.train.config import Method
from ftdata.train.record import ACCURACY, MARGIN, REWARD, perplexity

EVAL_HEADER = f"{'step':>5}  {'eval loss':>9}  {'perplexity':>10}  {'token accuracy':>14}"
PREFERENCE_HEADER = f"{'step':>5}  {'eval loss':>9}  {'reward margin':>13}  {'reward accuracy':>15}"
GRPO_HEADER = f"{'step':>5}  {'eval loss':>9}  {'reward':>8}  {'reward std':>10}"
HEADERS = {
    Method.SFT: EVAL_HEADER,
    Method.DPO: PREFERENCE_HEADER,
    Method.KTO: PREFERENCE_HEADER,
    Method.GRPO: GRPO_HEADER,
}


def eval_row(step: int, logs: dict[str, Any], method: Method = Method.SFT) -> str:
    """One line of the eval table, aligned under the method's header (`HEADERS`).

    >>> eval_row(30, {"eval_loss": 2.104, "eval_mean_token_accuracy": 0.5612})
    '   30     2.1040        8.20           0.561'
    >>> eval_row(30, {"eval_loss": 0.6012, "eval_rewards/margins": 0.2141, "eval_rewards/accuracies": 0.75}, Method.DPO)
    '   30     0.6012         0.2141            0.750'
    >>> eval_row(30, {"eval_loss": 0.0012, "eval_reward": 0.625, "eval_reward_std": 0.4}, Method.GRPO)
    '   30     0.0012    0.6250      0.4000'
    """
    loss = float(logs["eval_loss"])
    if method is Method.SFT:
        return (
            f"{step:>5}  {loss:>9.4f}  {perplexity(loss):>10.2f}  {_shown(logs.get('eval_mean_token_accuracy'), 3):>14}"
        )
    if method is Method.GRPO:
        reward, spread = _shown(logs.get(f"eval_{REWARD}"), 4), _shown(logs.get(f"eval_{REWARD}_std"), 4)
        return f"{step:>5}  {loss:>9.4f}  {reward:>8}  {spread:>10}"
    margin, accuracy = _shown(logs.get(f"eval_{MARGIN}"), 4), _shown(logs.get(f"eval_{ACCURACY}"), 3)
    return f"{step:>5}  {loss:>9.4f}  {margin:>13}  {accuracy:>15}"


def _shown(value: Any, digits: int) -> str:
    return f"{float(value):.{digits}f}" if value is not None else "-"


class TrainingDisplay(TrainerCallback):
    """Progress bar (steps, elapsed, remaining, last train loss) and the eval table.

    Args:
        console: where to draw; default a stdout console (plain when not a terminal: the bar
            is then drawn once, when training ends).
        verbose: also print every raw log dict (what transformers prints by default).
        method: the run's method: the eval table's columns (perplexity for SFT, reward margin for DPO/KTO,
            mean reward for GRPO).
    """

    def __init__(self, console: Console | None = None, *, verbose: bool = False, method: Method = Method.SFT):
        self.console = console or Console(highlight=False)
        self.verbose = verbose
        self.method = method
        self._progress: Progress | None = None
        self._task: Any = None
        self._header_shown = False

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        if not state.is_world_process_zero:
            return
        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[loss]}"),
            console=self.console,
        )
        self._task = self._progress.add_task("training", total=state.max_steps, completed=state.global_step, loss="")
        self._progress.start()

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        if self._progress is not None:
            self._progress.update(self._task, completed=state.global_step)

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        if not state.is_world_process_zero or not logs:
            return
        if self.verbose:
            self._print(repr(logs))
        if "loss" in logs and self._progress is not None:
            reward = f"  reward {float(logs[REWARD]):.3f}" if logs.get(REWARD) is not None else ""  # GRPO
            self._progress.update(self._task, loss=f"loss {float(logs['loss']):.3f}{reward}")
        if "eval_loss" in logs:
            if not self._header_shown:
                self._print(HEADERS[self.method])
                self._header_shown = True
            self._print(eval_row(state.global_step, logs, self.method))

    def on_train_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        if self._progress is not None:
            self._progress.update(self._task, completed=state.global_step)
            self._progress.stop()
            self._progress = None

    def _print(self, line: str) -> None:
        # Through the live display when there is one, so the line lands above the bar.
        target = self._progress.console if self._progress is not None else self.console
        target.print(line, soft_wrap=True, markup=False)


def replace_printers(trainer: Any, display: TrainerCallback) -> None:
    """Swap transformers' default log printers (raw dicts, tqdm) for `display`."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    for default in (PrinterCallback, ProgressCallback):
        trainer.remove_callback(default)
    trainer.add_callback(display)


@contextmanager
def quiet_libraries(quiet: bool = True) -> Iterator[None]:
    """Hide the libraries' own chatter while ftdata shows its progress: datasets' and
    transformers' tqdm bars ("Saving the dataset", "Loading weights") and a deprecation
    warning transformers 5 raises from inside peft. Restored afterwards; `quiet=False` keeps all."""
    if not quiet:
        yield
        return
    import datasets
    from transformers.utils import logging as hf_logging

    bars = (datasets.is_progress_bar_enabled(), hf_logging.is_progress_bar_enabled())
    datasets.disable_progress_bars()
    hf_logging.disable_progress_bar()
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
            yield
    finally:
        if bars[0]:
            datasets.enable_progress_bars()
        if bars[1]:
            hf_logging.enable_progress_bar()
