"""Training: runs with status and progress, live loss / reward-accuracy / margin curves, logs, evals."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import streamlit as st

from dashboard.auth import current_actor, is_admin
from dashboard.queries import act, current_settings, perform, read
from dashboard.widgets import ago, badge, confirm_button, scalar_metrics, when
from storage.models import DatasetSnapshot, RunKind, RunStatus, TrainingRun
from storage.runs import describe_drops, get_run, list_runs, request_cancel, run_metrics
from training.tracking import mlflow_location, run_link

actor = current_actor()
LIVE = (RunStatus.queued, RunStatus.running)
# Step metric names as training/callbacks.py records them.
CURVES = {"Loss": "loss", "Reward accuracy": "reward_accuracy", "Reward margin": "reward_margin"}
LOG_TAIL_BYTES = 20_000

st.title("Training")


# What each kind of run learns from, as the confirmation asks it.
KIND_DATA = {RunKind.dpo: "the approved pairs", RunKind.sft: "the approved pairs' chosen answers",
             RunKind.kto: "the approved votes (and pairs)"}


def start_now(kind: RunKind) -> None:
    from training.launcher import start_run_now  # imports torch (seconds): only when an admin starts a run

    perform(lambda: f"{kind.value.upper()} run #{start_run_now(current_settings(), actor, kind)} started.")


if is_admin(actor):
    kind_col, start_col = st.columns([1, 4], vertical_alignment="bottom")
    kind = kind_col.selectbox("Kind", list(RunKind), format_func=lambda k: k.value.upper(), key="run_kind")
    with start_col:
        confirm_button(":material/play_arrow: Start a run now", "start_run", lambda: start_now(kind),
                       question=f"Snapshot {KIND_DATA[kind]} and start a {kind.value.upper()} run now?")

runs = read(lambda s: list_runs(s, limit=50))
if not runs:
    st.info("No training run yet. The scheduler starts one when enough approved pairs (or votes) have accumulated.")
    st.stop()


def progress_text(run: TrainingRun) -> str:
    return f"{run.current_step}/{run.total_steps}" if run.total_steps else f"{run.current_step}/?"


st.dataframe(
    pd.DataFrame(
        {
            "run": [r.id for r in runs],
            "kind": [r.kind.value for r in runs],
            "status": [r.status.value for r in runs],
            "progress": [progress_text(r) for r in runs],
            "triggered by": [r.triggered_by for r in runs],
            "created": [when(r.created_at) for r in runs],
            "finished": [when(r.finished_at) for r in runs],
        }
    ),
    hide_index=True,
)
run_id = st.selectbox("Run", [r.id for r in runs], format_func=lambda i: f"#{i}", key="run_id")


def curves(run_id: int) -> None:
    steps = read(lambda s: run_metrics(s, run_id))
    if not steps:
        st.caption("No steps logged yet.")
        return
    frame = pd.DataFrame([{"step": m.step, **m.values} for m in steps]).set_index("step")
    for column, (title, key) in zip(st.columns(len(CURVES)), CURVES.items()):
        column.markdown(f"**{title}**")
        if key in frame.columns:
            column.line_chart(frame[key].dropna(), height=220, x_label="step", y_label="")
        else:
            column.caption("not logged")


def log_tail(path: str | None) -> str | None:
    if not path or not Path(path).is_file():
        return None
    with open(path, "rb") as handle:
        handle.seek(max(0, Path(path).stat().st_size - LOG_TAIL_BYTES))
        return handle.read().decode("utf-8", errors="replace")


def cancel(run_id: int) -> None:
    act(lambda s: f"Cancellation of run #{run_id} requested ({request_cancel(s, run_id, actor).status.value}).")


def mlflow_caption(run: TrainingRun) -> None:
    if not run.mlflow_run:
        return
    settings, run_ref = current_settings(), run.mlflow_run["run_id"]
    link = run_link(settings, run.mlflow_run)
    st.caption(f"MLflow run [{run_ref}]({link})" if link else
               f"MLflow run `{run_ref}` in `{mlflow_location(settings)}` (browse it with `mlflow ui "
               f"--backend-store-uri {mlflow_location(settings)}`)")


def snapshot_caption(snapshot: DatasetSnapshot | None) -> str:
    if snapshot is None:
        return ""
    dropped = describe_drops(snapshot.dropped) if snapshot.dropped else "none"
    return (f" · snapshot #{snapshot.id}: {snapshot.train_count} train / {snapshot.eval_count} held-out pairs, "
            f"approved pairs left out: {dropped}")


def run_details(run_id: int) -> None:
    run, snapshot = read(lambda s: (run := get_run(s, run_id), run.snapshot))
    head, action = st.columns([4, 1])
    head.markdown(f"### Run #{run.id} {badge(run.status)}")
    head.caption(f"{run.kind.value} · triggered by {run.triggered_by} · created {ago(run.created_at)}"
                 + snapshot_caption(snapshot))
    mlflow_caption(run)
    if run.total_steps:
        st.progress(min(run.current_step / run.total_steps, 1.0), text=f"step {progress_text(run)}")
    if run.error:
        st.error(run.error)
    if run.not_registered_reason:
        st.warning(f"Not registered: {run.not_registered_reason}")
    if is_admin(actor) and run.status in LIVE:
        with action:
            confirm_button("Cancel run", f"cancel_{run.id}", lambda: cancel(run.id),
                           question=f"Cancel run #{run.id}?")
    curves(run.id)
    if run.eval_metrics:
        st.markdown("**Evaluation**")
        shown = scalar_metrics(run.eval_metrics)
        st.dataframe(pd.DataFrame({"metric": list(shown), "value": list(map(str, shown.values()))}), hide_index=True)
    log = log_tail(run.log_path)
    with st.expander("Log", expanded=False):
        st.code(log or "no log file yet", language=None)


live = next(r for r in runs if r.id == run_id).status in LIVE
st.fragment(run_every=5 if live else None)(run_details)(run_id)  # live curves while it trains
