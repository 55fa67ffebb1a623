"""Overview: how much the assistant is used, how it is rated per model version, and the loop's state."""

from __future__ import annotations

import altair as alt
import pandas as pd
import streamlit as st

from dashboard.queries import current_settings, overview_stats, read
from dashboard.widgets import ago
from storage.status import loop_state

st.title("Overview")


state = read(loop_state)
active, canary, run = state.active, state.canary, state.last_run
cols = st.columns(4)
cols[0].metric("Pending pairs", f"{state.pending_pairs:,}", border=True)
cols[1].metric("Active model", active.name if active else "base", border=True)
cols[2].metric("Canary", f"{canary.name} ({canary.canary_share:.0%})" if canary else "none", border=True)
cols[3].metric("Last run", run.status.value if run else "none yet",
               f"#{run.id} · {ago(run.created_at)}" if run else None, delta_color="off", delta_arrow="off", border=True)
if state.pending_pairs:
    st.page_link("views/review.py", label=f"Review {state.pending_pairs:,} pending pair(s)",
                 icon=":material/fact_check:")

days = st.segmented_control("Period", [7, 30, 90], default=30, format_func=lambda d: f"{d} days", key="period")
daily, votes = overview_stats(current_settings().database_url, days or 30)
if not daily:
    st.info("No answers in this period yet. Ask the bot in Slack, or try the Playground.")
    st.stop()

daily = pd.DataFrame(daily)
daily["day"] = pd.to_datetime(daily["day"])
daily["feedback rate"] = daily["with_feedback"] / daily["interactions"]
left, right = st.columns(2)
with left:
    st.subheader("Answers per day")
    chart = alt.Chart(daily).mark_bar(cornerRadiusTopLeft=3, cornerRadiusTopRight=3).encode(
        x=alt.X("yearmonthdate(day):O", title=None, axis=alt.Axis(format="%b %d", labelAngle=0)),
        y=alt.Y("interactions:Q", title=None), tooltip=["day:T", "interactions:Q", "with_feedback:Q"],
    )
    st.altair_chart(chart.properties(height=260), width="stretch")
with right:
    st.subheader("Feedback rate", help="Share of answers that got at least one thumbs up or down.")
    chart = alt.Chart(daily).mark_line(point=True).encode(
        x=alt.X("day:T", title=None, axis=alt.Axis(format="%b %d")), y=alt.Y("feedback rate:Q", axis=alt.Axis(format="%"), title=None)
    )
    st.altair_chart(chart.properties(height=230), width="stretch")

st.subheader("Thumbs-up share per model version")
if votes:
    votes = pd.DataFrame(votes)
    votes["day"] = pd.to_datetime(votes["day"])
    votes["thumbs-up share"] = votes["up"] / votes["votes"]
    chart = alt.Chart(votes).mark_line(point=True).encode(
        x=alt.X("day:T", title=None, axis=alt.Axis(format="%b %d")),
        y=alt.Y("thumbs-up share:Q", axis=alt.Axis(format="%"), scale=alt.Scale(domain=[0, 1]), title=None),
        color=alt.Color("model:N", title="model"),
        tooltip=["day:T", "model:N", "up:Q", "votes:Q", alt.Tooltip("thumbs-up share:Q", format=".0%")],
    )
    st.altair_chart(chart.properties(height=280), width="stretch")
else:
    st.info("No votes in this period yet.")
