"""Audit log (admins only): who did what, when, and what it changed (before → after); filtered by
actor, action and days, and downloadable as CSV."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboard.queries import current_settings, read
from dashboard.widgets import date_range, when
from storage.audit import describe_change, events_csv, list_events, recorded_actions
from storage.db import get_engine, session_scope
from storage.models import AuditEvent

SHOWN = 500
st.title("Audit log")
actor_col, action_col, dates_col = st.columns([1, 1.6, 1])
actor = actor_col.text_input("Actor", placeholder="a username", key="audit_actor").strip() or None
actions = action_col.multiselect("Action", read(recorded_actions), key="audit_actions")
since, until = date_range(dates_col, "Between", "audit_dates")
database_url = current_settings().database_url


def matching(limit: int | None) -> list[AuditEvent]:
    # Also runs on Streamlit's download thread when clicked, so it takes the URL, not the session.
    with session_scope(get_engine(database_url)) as session:
        return list_events(session, limit, actor=actor, actions=actions, since=since, until=until)


def frame(events: list[AuditEvent]) -> pd.DataFrame:
    return pd.DataFrame({
        "when": [when(e.created_at) for e in events],
        "who": [e.actor for e in events],
        "action": [e.action for e in events],
        "target": [f"{e.target_type} #{e.target_id}" if e.target_id is not None else e.target_type for e in events],
        "change": [describe_change(e.details) for e in events],
    })


events = matching(SHOWN)
st.caption(f"The newest {SHOWN} matching events are shown; the CSV has all of them." if len(events) == SHOWN
           else f"{len(events)} matching event(s), newest first.")
st.dataframe(frame(events), hide_index=True)
st.download_button("Download as CSV", lambda: events_csv(matching(None)), file_name="flywheel-audit.csv",
                   mime="text/csv", icon=":material/download:", disabled=not events, on_click="ignore",
                   key="audit_csv")
