"""Models: the registry. Compare a candidate with the active version, promote, roll back, run a canary.

Each change is made by storage/ (which checks the admin role and the transition), then serving/
makes the running vLLM match the registry, without a restart.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from dashboard.auth import current_actor, is_admin
from dashboard.queries import act, current_settings, flash, read
from dashboard.widgets import badge, confirm_button, scalar_metrics, when
from storage.audit import describe_change, list_events
from storage.models import ModelVersion, VersionStatus, last_user_message
from storage.registry import list_versions, promote_version, rollback, start_canary, stop_canary
from storage.runs import get_run
from training.answer_metrics import says_key_content
from training.model_card import read_model_card
from training.tracking import follow_registry

actor = current_actor()
st.title("Models")


def sync_serving() -> None:
    """Push the registry to vLLM (a vLLM that is down is reported; the registry change stands)."""
    report = follow_registry(current_settings())
    flash("success" if report.updated else "warning", report.message)


versions = read(list_versions)
if not versions:
    st.info("No model version yet: the base model answers. A successful training run registers a candidate.")
    st.stop()
by_name = {v.name: v for v in versions}
active = next((v for v in versions if v.status is VersionStatus.active), None)
canary = next((v for v in versions if v.status is VersionStatus.canary), None)

cols = st.columns(3)
cols[0].metric("Active", active.name if active else "base", border=True)
cols[1].metric("Canary", f"{canary.name} · {canary.canary_share:.0%}" if canary else "none", border=True)
cols[2].metric("Candidates", sum(v.status is VersionStatus.candidate for v in versions), border=True)

st.dataframe(
    pd.DataFrame(
        {
            "version": [v.name for v in versions],
            "status": [v.status.value for v in versions],
            "canary share": [v.canary_share if v.status is VersionStatus.canary else None for v in versions],
            "parent": [next((p.name for p in versions if p.id == v.parent_id), "base") for v in versions],
            "run": [v.training_run_id for v in versions],
            "created": [when(v.created_at) for v in versions],
            "promoted": [when(v.promoted_at) for v in versions],
        }
    ),
    hide_index=True,
)

# --- compare ---------------------------------------------------------------------------------
others = [v.name for v in versions if v is not active]
st.subheader("Compare with the active version")
if not others:
    st.caption("Only the active version exists.")
    st.stop()
default = next((i for i, n in enumerate(others) if by_name[n].status is VersionStatus.candidate), 0)
chosen = by_name[st.selectbox("Version", others, index=default, key="compare")]
left_label = active.name if active else "base"


def metrics_table(new: ModelVersion, old: ModelVersion | None) -> pd.DataFrame:
    new_metrics, old_metrics = scalar_metrics(new.metrics), scalar_metrics(old.metrics if old else {})
    keys = list(dict.fromkeys([*new_metrics, *old_metrics]))
    table = pd.DataFrame({"metric": keys, left_label: [old_metrics.get(k) for k in keys],
                          new.name: [new_metrics.get(k) for k in keys]})
    numeric = pd.to_numeric(table[new.name], errors="coerce") - pd.to_numeric(table[left_label], errors="coerce")
    return table.assign(change=numeric)


def answers_by_prompt(version: ModelVersion | None) -> dict[str, str]:
    return dict(_prompt_and_answer(item) for item in (version.regression_answers if version else []))


def _prompt_and_answer(item: Any) -> tuple[str, str]:
    if not isinstance(item, dict):
        return str(item), ""
    prompt = next((item[k] for k in ("prompt", "question", "messages") if k in item), "")
    if isinstance(prompt, list):  # chat messages
        prompt = last_user_message(prompt)
    text = next((item[k] for k in ("answer", "text", "completion", "output") if k in item), "")
    return str(prompt), str(text)


def run_and_snapshot(session, run_id: int):
    run = get_run(session, run_id)
    return run, run.snapshot


def lineage(version: ModelVersion) -> str:
    parent = next((v.name for v in versions if v.id == version.parent_id), "the base model")
    parts = [f"**{version.name}** {badge(version.status)} from {parent}"]
    if version.training_run_id:
        run, snapshot = read(lambda s: run_and_snapshot(s, version.training_run_id))
        parts.append(f"trained by run #{run.id} ({run.status.value})")
        if snapshot:
            parts.append(f"on snapshot #{snapshot.id} ({snapshot.train_count} train / "
                         f"{snapshot.eval_count} eval, `{snapshot.content_hash[:12]}`)")
    return " · ".join(parts) + f" · adapter `{version.adapter_path}`"


st.markdown(lineage(chosen))
card = read_model_card(chosen.adapter_path)
with st.expander(f"Model card of {chosen.name}", expanded=False):
    st.markdown(card or "No model card in the adapter folder.")
st.dataframe(metrics_table(chosen, active), hide_index=True, column_config={
    "change": st.column_config.NumberColumn(format="%+.3f")})



def two_answers(left_caption: str, left_answer: str, right_caption: str, right_answer: str) -> None:
    left, right = st.columns(2)
    left.caption(left_caption)
    left.text(left_answer)
    right.caption(right_caption)
    right.text(right_answer)


def key_content_mark(answer: str, preferred: str) -> str:
    said = says_key_content(answer, preferred)
    return "" if said is None else " · ✓ says the key content" if said else " · ✗ misses key content"


held_out = chosen.metrics.get("held_out_answers") or []
compared_with = chosen.metrics.get("compared_with", "the version it was trained to beat")
st.markdown(f"**Held-out questions: what {chosen.name} answers, beside {compared_with}** (greedy, from its "
            "evaluation; key content = the code, numbers and names of the preferred answer)")
if not held_out:
    st.caption("No held-out answers recorded (a version evaluated before answers were generated, or registered "
               "by hand).")
for row in held_out:
    with st.container(border=True):
        st.text(row["prompt"])  # people's text: shown as text, never as markdown
        st.caption("Preferred answer")
        st.text(row["chosen"])
        two_answers(compared_with + key_content_mark(row["incumbent_answer"], row["chosen"]), row["incumbent_answer"],
                    chosen.name + key_content_mark(row["answer"], row["chosen"]), row["answer"])

st.markdown("**Answers to the regression prompts**")
new_answers, old_answers = answers_by_prompt(chosen), answers_by_prompt(active)
if not new_answers and not old_answers:
    st.caption("No regression answers recorded.")
for prompt in dict.fromkeys([*new_answers, *old_answers]):
    with st.container(border=True):
        st.markdown(f"**{prompt}**")
        two_answers(left_label, old_answers.get(prompt, "—"), chosen.name, new_answers.get(prompt, "—"))

# --- admin actions ----------------------------------------------------------------------------
st.subheader("Serve")
if not is_admin(actor):
    st.caption("Promoting, rolling back and canaries need an admin account.")
else:
    promote_col, canary_col, rollback_col = st.columns(3)
    with promote_col:
        confirm_button(f"Promote {chosen.name}", "promote",
                       lambda: act(lambda s: f"{promote_version(s, chosen.id, actor).name} is now active.",
                                   after=sync_serving),
                       question=f"Make {chosen.name} the active model for every user?",
                       disabled=chosen.status in (VersionStatus.active, VersionStatus.retired))
    with canary_col:
        if canary is None:
            share = st.slider("Canary share", 1, 50, 10, format="%d%%", key="canary_share") / 100
            confirm_button(f"Start canary {chosen.name}", "start_canary",
                           lambda: act(lambda s: f"{start_canary(s, chosen.id, share, actor).name} is the canary "
                                                 f"for {share:.0%} of users.", after=sync_serving),
                           question=f"Route {share:.0%} of users to {chosen.name}?")
        else:
            confirm_button(f"Stop canary {canary.name}", "stop_canary",
                           lambda: act(lambda s: f"Canary {stop_canary(s, actor).name} stopped.", after=sync_serving),
                           question=f"Stop routing users to {canary.name}?")
    with rollback_col:
        confirm_button("Roll back", "rollback",
                       lambda: act(lambda s: f"Rolled back: {rollback(s, actor).name} is active again.",
                                   after=sync_serving),
                       question="Re-activate the previously active version?")

st.subheader("Audit trail")
events = read(lambda s: list_events(s, limit=50, target_type="model_version"))
names = {v.id: v.name for v in versions}
st.dataframe(
    pd.DataFrame({
        "when": [when(e.created_at) for e in events],
        "who": [e.actor for e in events],
        "action": [e.action for e in events],
        "version": [names.get(e.target_id, e.target_id) for e in events],
        "change": [describe_change(e.details) for e in events],
    }),
    hide_index=True,
)
