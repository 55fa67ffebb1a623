"""Widgets the pages share: word diffs, chat threads, two-step confirmations, small formatters."""

from __future__ import annotations

import difflib
import html
import re
from collections.abc import Callable
from datetime import datetime, time, timedelta, timezone
from typing import Any

import streamlit as st

# Words and punctuation with their trailing spaces: a changed phrase is highlighted as one run.
_TOKENS = re.compile(r"\w+\s*|[^\w\s]+\s*|\s+")
_BOX = (
    "white-space:pre-wrap;font-size:0.92rem;line-height:1.5;padding:0.6rem 0.8rem;border-radius:0.5rem;"
    "border:1px solid rgba(128,128,128,0.25);min-height:3rem;margin-bottom:0.75rem;"
)
_MARK = {
    "chosen": "background:rgba(33,195,84,0.22);border-radius:3px;",
    "rejected": "background:rgba(255,75,75,0.22);border-radius:3px;text-decoration:line-through;",
}


def word_diff(chosen: str, rejected: str) -> tuple[str, str]:
    """HTML for both texts with the words only one of them has highlighted (text is escaped)."""
    a, b = _TOKENS.findall(chosen), _TOKENS.findall(rejected)
    left, right = [], []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        left.append(_span("".join(a[i1:i2]), "chosen" if op != "equal" else None))
        right.append(_span("".join(b[j1:j2]), "rejected" if op != "equal" else None))
    return "".join(left), "".join(right)


def _span(text: str, mark: str | None) -> str:
    escaped = html.escape(text)
    return f'<span style="{_MARK[mark]}">{escaped}</span>' if mark and text.strip() else escaped


def side_by_side(chosen: str, rejected: str, *, labels: tuple[str, str] = (":material/thumb_up: Chosen", ":material/thumb_down: Rejected")) -> None:
    left_html, right_html = word_diff(chosen, rejected)
    left, right = st.columns(2)
    for column, label, body in ((left, labels[0], left_html), (right, labels[1], right_html)):
        column.markdown(f"**{label}**")
        # st.html, not st.markdown: the escaped text must not go through markdown either (a user's **x**
        # or [link](...) stays as written).
        column.html(f'<div style="{_BOX}">{body}</div>')


def thread(messages: list[dict[str, Any]]) -> None:
    """The prompt as the model saw it: earlier thread messages first, the question last."""
    for message in messages:
        if message.get("role") == "system":
            continue
        with st.chat_message("user" if message.get("role") == "user" else "assistant"):
            st.text(message.get("content", ""))


def confirm_button(label: str, key: str, on_confirm: Callable[[], None], *, question: str, disabled=False) -> None:
    """A button that asks before it acts: the first click shows the question and Confirm / Cancel."""
    pending = f"confirm_{key}"
    if not st.session_state.get(pending):
        if st.button(label, key=key, disabled=disabled):
            st.session_state[pending] = True
            st.rerun()
        return
    st.warning(question, icon=":material/warning:")
    yes, no = st.columns(2)
    if yes.button("Confirm", key=f"{key}_yes", type="primary"):
        st.session_state[pending] = False
        on_confirm()
    if no.button("Cancel", key=f"{key}_no"):
        st.session_state[pending] = False
        st.rerun()


def date_range(container, label: str, key: str) -> tuple[datetime | None, datetime | None]:
    """A picker of days: (the first day's start, the start of the day after the last), in UTC."""
    dates = container.date_input(label, value=[], key=key)
    since = _day_start(dates[0]) if len(dates) >= 1 else None
    until = _day_start(dates[1] + timedelta(days=1)) if len(dates) == 2 else None  # the end day included
    return since, until


def _day_start(day) -> datetime:
    return datetime.combine(day, time.min, tzinfo=timezone.utc)


def ago(moment: datetime | None) -> str:
    if moment is None:
        return "—"
    seconds = (datetime.now(timezone.utc) - moment).total_seconds()
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{int(seconds // size)} {unit} ago"
    return "just now"


def when(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M UTC") if moment else "—"


STATUS_BADGE = {
    "active": ":green-badge[active]",
    "canary": ":orange-badge[canary]",
    "candidate": ":blue-badge[candidate]",
    "retired": ":gray-badge[retired]",
    "queued": ":gray-badge[queued]",
    "running": ":blue-badge[running]",
    "succeeded": ":green-badge[succeeded]",
    "failed": ":red-badge[failed]",
    "cancelled": ":gray-badge[cancelled]",
}


def scalar_metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    """The metrics a table can show (numbers, text); lists and nested results, such as the held-out answers and
    the incumbent's scores, have their own place on the page."""
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float, str))}


def badge(status: Any) -> str:
    value = getattr(status, "value", status)
    return STATUS_BADGE.get(value, value)


def page_cursor(flt: Any, prefix: str = "") -> list[int | None]:
    """The `before_id` of each page seen so far (keyset pagination); a new filter starts over."""
    if st.session_state.get(f"{prefix}cursor_filter") != flt:
        st.session_state[f"{prefix}cursor_filter"], st.session_state[f"{prefix}cursors"] = flt, [None]
    return st.session_state[f"{prefix}cursors"]


def pager(cursors: list[int | None], items: list, size: int, prefix: str = "") -> None:
    """Newer / Older buttons over keyset pages of `items` (anything with an id), and the page size."""
    prev_col, next_col, size_col = st.columns([1, 1, 4])
    if prev_col.button("← Newer", disabled=len(cursors) == 1, key=f"{prefix}newer"):
        cursors.pop()
        st.rerun()
    if next_col.button("Older →", disabled=len(items) < size, key=f"{prefix}older"):
        cursors.append(items[-1].id)
        st.rerun()
    size_col.selectbox("Per page", [10, 25, 50], key=f"{prefix}page_size", label_visibility="collapsed")


def select_bar(items: list, prefix: str, decide: Callable[[list[int], bool], None]) -> None:
    """Select page / Clear, and Approve / Reject the selected items (checkboxes keyed `{prefix}sel_{id}`)."""
    selected = [i.id for i in items if st.session_state.get(f"{prefix}sel_{i.id}")]

    def select_all(value: bool) -> None:
        for i in items:
            st.session_state[f"{prefix}sel_{i.id}"] = value

    cols = st.columns([1.2, 1.2, 1.6, 1.6, 3])
    cols[0].button("Select page", on_click=select_all, args=(True,), key=f"{prefix}select_all")
    cols[1].button("Clear", on_click=select_all, args=(False,), key=f"{prefix}select_none")
    if cols[2].button(f"Approve selected ({len(selected)})", disabled=not selected, key=f"{prefix}bulk_approve",
                      type="primary"):
        decide(selected, True)
    if cols[3].button(f"Reject selected ({len(selected)})", disabled=not selected, key=f"{prefix}bulk_reject"):
        decide(selected, False)
