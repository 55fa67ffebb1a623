"""Review queue: pending pairs newest first, filtered and keyset-paginated; approve, edit, reject, in bulk.
The votes (which teach KTO runs) are reviewed in their own section of the page (dashboard/vote_review.py)."""

from __future__ import annotations

import streamlit as st

from dashboard.auth import current_actor
from dashboard.queries import act, read
from dashboard.vote_review import votes_section
from dashboard.widgets import ago, date_range, page_cursor, pager, select_bar, side_by_side, thread
from storage.models import PairSource, PairStatus, PreferencePair
from storage.pairs import PairFilter, approve_pair, count_pairs, list_pairs, reject_pair

actor = current_actor()
st.title("Review queue")
if st.segmented_control("Review", ["Pairs", "Votes"], default="Pairs", key="review_what",
                        label_visibility="collapsed") == "Votes":
    votes_section(actor)
    st.stop()


def read_filter() -> PairFilter:
    status_col, source_col, channel_col, dates_col = st.columns([1, 1, 1, 1.4])
    status = status_col.selectbox("Status", list(PairStatus), format_func=lambda s: s.value, key="f_status")
    source = source_col.selectbox(
        "Source", [None, *PairSource], format_func=lambda s: "all" if s is None else s.value, key="f_source"
    )
    channel = channel_col.text_input("Channel", placeholder="C0123…", key="f_channel").strip()
    since, until = date_range(dates_col, "Created between", "f_dates")
    text = st.text_input("Search", placeholder="words in the prompt or answers", key="f_text").strip()
    return PairFilter(status=status, source=source, channel_id=channel or None, since=since, until=until,
                      text=text or None)


def decide(pair_ids: list[int], approve: bool, edits: dict[int, str] | None = None) -> None:
    """Approve or reject these pairs in one transaction: all of them, or none if one is refused."""
    edits = edits or {}

    def action(session) -> str:
        for pair_id in pair_ids:
            if approve:
                approve_pair(session, pair_id, actor, chosen=edits.get(pair_id))
            else:
                reject_pair(session, pair_id, actor)
        verb = "approved" if approve else "rejected"
        return f"{verb.capitalize()} {len(pair_ids)} pair(s): " + ", ".join(f"#{i}" for i in pair_ids)

    act(action)


def edited_chosen(pair: PreferencePair) -> str | None:
    text = st.session_state.get(f"edit_{pair.id}")
    return text if text is not None and text.strip() != pair.chosen.strip() else None


def show_pair(pair: PreferencePair) -> None:
    with st.container(border=True):
        head, meta = st.columns([3, 2])
        pending = pair.status is PairStatus.pending
        label = f"**#{pair.id}** · {pair.source.value}"
        if pending:
            head.checkbox(label, key=f"sel_{pair.id}")
        else:
            head.markdown(f"{label} · {pair.status.value} by {pair.reviewer or '?'}")
        channel = f"#{pair.channel_id} · " if pair.channel_id else ""
        meta.caption(f"{channel}created {ago(pair.created_at)}")
        thread(pair.prompt)
        side_by_side(pair.chosen, pair.rejected)
        if pair.original_chosen:
            st.caption(f"Edited by the reviewer; the original chosen text was: {pair.original_chosen}")
        if not pending:
            return
        with st.expander("Edit the chosen answer before approving"):
            st.text_area("Chosen answer", value=pair.chosen, key=f"edit_{pair.id}", height=120)
        approve_col, reject_col, _ = st.columns([1, 1, 4])
        edit = edited_chosen(pair)
        if approve_col.button("Approve edited" if edit else "Approve", key=f"approve_{pair.id}", type="primary",
                             icon=":material/check:"):
            decide([pair.id], True, {pair.id: edit} if edit else None)
        if reject_col.button("Reject", key=f"reject_{pair.id}", icon=":material/close:"):
            decide([pair.id], False)


def bulk_bar(pairs: list[PreferencePair]) -> None:
    def decide_selected(pair_ids: list[int], approve: bool) -> None:  # an approval keeps the reviewer's edits
        decide(pair_ids, approve, {p.id: e for p in pairs if p.id in pair_ids and (e := edited_chosen(p))})

    select_bar(pairs, "", decide_selected)


flt = read_filter()
cursors = page_cursor(flt)
size = st.session_state.get("page_size", 10)
total, pairs = read(lambda s: (count_pairs(s, flt), list_pairs(s, flt, limit=size, before_id=cursors[-1])))
page_number = len(cursors)
st.caption(f"{total:,} pair(s) match · page {page_number} · newest first")

if not pairs:
    st.info("Nothing to review here. New pairs arrive from better answers in Slack and from the arena.")
elif flt.status is PairStatus.pending:
    bulk_bar(pairs)
for pair in pairs:
    show_pair(pair)

pager(cursors, pairs, size)
