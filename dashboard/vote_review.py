"""The review queue's votes: is this answer as good (👍) or as bad (👎) as voted? Approved votes teach KTO runs
(with FLYWHEEL_KTO_PENDING_VOTES, unreviewed ones too; rejected ones never). Newest first, keyset pages, in bulk."""

from __future__ import annotations

import streamlit as st

from dashboard.queries import act, read
from dashboard.widgets import ago, page_cursor, pager, select_bar, thread
from storage.interactions import VoteFilter, approve_vote, count_votes, list_votes, reject_vote
from storage.models import Feedback, PairStatus, Vote
from storage.users import Actor

PREFIX = "v_"  # widget keys of this section, apart from the pairs' on the same page
THUMBS = {Vote.up: "👍", Vote.down: "👎"}


def read_vote_filter() -> VoteFilter:
    status_col, vote_col, _ = st.columns([1, 1, 2])
    status = status_col.selectbox("Status", list(PairStatus), format_func=lambda s: s.value, key=f"{PREFIX}status")
    vote = vote_col.selectbox("Vote", [None, *Vote], format_func=lambda v: "all" if v is None else THUMBS[v],
                              key=f"{PREFIX}vote")
    return VoteFilter(status=status, vote=vote)


def decide_votes(actor: Actor, feedback_ids: list[int], approve: bool) -> None:
    """Approve or reject these votes in one transaction: all of them, or none if one is refused."""
    def action(session) -> str:
        for feedback_id in feedback_ids:
            (approve_vote if approve else reject_vote)(session, feedback_id, actor)
        verb = "approved" if approve else "rejected"
        return f"{verb.capitalize()} {len(feedback_ids)} vote(s): " + ", ".join(f"#{i}" for i in feedback_ids)

    act(action)


def show_vote(actor: Actor, feedback: Feedback) -> None:
    with st.container(border=True):
        head, meta = st.columns([3, 2])
        label = f"**#{feedback.id}** · {THUMBS[feedback.vote]} by {feedback.user_id}"
        pending = feedback.status is PairStatus.pending
        if pending:
            head.checkbox(label, key=f"{PREFIX}sel_{feedback.id}")
        else:
            head.markdown(f"{label} · {feedback.status.value} by {feedback.reviewer or '?'}")
        meta.caption(f"voted {ago(feedback.updated_at)} · answered by {feedback.interaction.served_model or '?'}")
        thread(feedback.interaction.prompt_messages)
        st.text(feedback.interaction.answer)  # st.text: user text never goes through markdown
        if feedback.comment:
            st.caption(f"Comment: {feedback.comment}")
        if not pending:
            return
        approve_col, reject_col, _ = st.columns([1, 1, 4])
        if approve_col.button("Approve", key=f"{PREFIX}approve_{feedback.id}", type="primary", icon=":material/check:"):
            decide_votes(actor, [feedback.id], True)
        if reject_col.button("Reject", key=f"{PREFIX}reject_{feedback.id}", icon=":material/close:"):
            decide_votes(actor, [feedback.id], False)


def votes_section(actor: Actor) -> None:
    flt = read_vote_filter()
    cursors = page_cursor(flt, PREFIX)
    size = st.session_state.get(f"{PREFIX}page_size", 10)
    total, votes = read(lambda s: (count_votes(s, flt), list_votes(s, flt, limit=size, before_id=cursors[-1])))
    st.caption(f"{total:,} vote(s) match · page {len(cursors)} · newest first")
    if not votes:
        st.info("No votes here. Votes arrive from the 👍 / 👎 under the bot's answers in Slack.")
    elif flt.status is PairStatus.pending:
        select_bar(votes, PREFIX, lambda ids, approve: decide_votes(actor, ids, approve))
    for feedback in votes:
        show_vote(actor, feedback)
    pager(cursors, votes, size, PREFIX)
