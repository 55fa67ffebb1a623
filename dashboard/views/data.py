"""Data: how many pairs are in each state, the immutable dataset snapshots, and a JSONL export."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboard.queries import current_settings, read
from dashboard.widgets import when
from storage.db import get_engine, session_scope
from storage.models import PairStatus
from storage.pairs import PairFilter, count_pairs, export_jsonl
from storage.runs import list_snapshots

st.title("Data")

counts = read(lambda s: {status: count_pairs(s, PairFilter(status=status)) for status in PairStatus})
cols = st.columns(len(counts))
for column, (status, count) in zip(cols, counts.items()):
    column.metric(f"{status.value.capitalize()} pairs", f"{count:,}", border=True)

st.subheader("Export")
st.caption("Approved pairs in TRL's conversational preference format: one JSON object per line.")
database_url = current_settings().database_url


def approved_jsonl() -> str:
    # Runs on Streamlit's download thread when clicked, so it takes the URL, not the session.
    with session_scope(get_engine(database_url)) as session:
        return "".join(line + "\n" for line in export_jsonl(session, PairStatus.approved))


st.download_button(
    f"Download {counts[PairStatus.approved]:,} approved pair(s) as JSONL", approved_jsonl,
    file_name="flywheel-approved-pairs.jsonl", mime="application/jsonl", icon=":material/download:",
    disabled=not counts[PairStatus.approved], on_click="ignore",
)

st.subheader("Dataset snapshots")
st.caption("Each training run trains on an immutable, content-hashed snapshot of the approved pairs.")
snapshots = read(list_snapshots)
if not snapshots:
    st.info("No snapshot yet: the first training run makes one.")
else:
    table = pd.DataFrame(
        {
            "snapshot": [s.id for s in snapshots],
            "created": [when(s.created_at) for s in snapshots],
            "pairs": [len(s.pair_ids) for s in snapshots],
            "train": [s.train_count for s in snapshots],
            "eval": [s.eval_count for s in snapshots],
            "content hash": [s.content_hash[:16] + "…" for s in snapshots],
            "path": [s.path for s in snapshots],
        }
    )
    st.dataframe(table, hide_index=True)
