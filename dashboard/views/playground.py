"""Playground: chat with any registered version, or ask two at once (arena) and pick the better answer,
which becomes a pending preference pair. Every answer is recorded like the bot's, in a playground
conversation, so a failed generation is still stored."""

from __future__ import annotations

import uuid

import streamlit as st

from dashboard.auth import current_actor
from dashboard.queries import act, current_settings, db, read
from serving.client import Answer, answer
from serving.errors import ServingError
from storage.interactions import complete_interaction, fail_interaction, get_or_create_conversation, start_interaction
from storage.models import PairSource
from storage.pairs import create_pair
from storage.registry import active_version, list_versions

actor = current_actor()
st.title("Playground")
st.caption("Answers here are recorded like the bot's. In the arena, picking the better answer adds a pending pair.")

models = ["base", *read(lambda s: [v.name for v in list_versions(s)])]
serving_now = read(lambda s: getattr(active_version(s), "name", "base"))
session_id = st.session_state.setdefault("playground_id", uuid.uuid4().hex[:12])


def ask(messages: list[dict], model: str, on_token=None) -> tuple[Answer, int] | None:
    """Record the question, ask the model, record the answer (or the failure, which is shown).
    Returns the answer and its interaction id."""
    with db() as session:
        conversation = get_or_create_conversation(session, "playground", thread_ts=f"{actor.name}-{session_id}")
        interaction_id = start_interaction(session, conversation, messages, user_id=actor.name).id
    try:
        reply = answer(current_settings(), messages, model=model, user_id=actor.name, on_token=on_token)
    except ServingError as exc:
        with db() as session:
            fail_interaction(session, interaction_id, str(exc))
        st.error(f"{model} could not answer: {exc}")
        return None
    with db() as session:
        complete_interaction(
            session, interaction_id, answer=reply.text, served_model=reply.served_model,
            model_version_id=reply.model_version_id, latency_ms=reply.latency_ms,
            prompt_tokens=reply.prompt_tokens, completion_tokens=reply.completion_tokens)
    return reply, interaction_id


def chat() -> None:
    model = st.selectbox("Model", models, index=models.index(serving_now), key="chat_model")
    history = st.session_state.setdefault("chat", [])
    if st.button("New conversation", key="new_chat"):
        history.clear()
    for message in history:
        st.chat_message(message["role"]).markdown(message["content"])
    question = st.chat_input(f"Ask {model}…")
    if not question:
        return
    history.append({"role": "user", "content": question})
    st.chat_message("user").markdown(question)
    with st.chat_message("assistant"):
        box, parts = st.empty(), []

        def stream(token: str) -> None:  # the answer appears as vLLM writes it
            parts.append(token)
            box.markdown("".join(parts) + "▌")

        asked = ask(list(history), model, on_token=stream)
    if asked is None:
        history.pop()
        return
    reply = asked[0]
    history.append({"role": "assistant", "content": reply.text})
    box.markdown(reply.text)
    st.caption(f"{reply.served_model} · {reply.completion_tokens} tokens · {reply.latency_ms:,.0f} ms")


def arena() -> None:
    left, right = st.columns(2)
    model_a = left.selectbox("Model A", models, index=0, key="arena_a")
    model_b = right.selectbox("Model B", models, index=min(1, len(models) - 1), key="arena_b")
    with st.form("arena_form"):
        question = st.text_area("Question", key="arena_question", height=90)
        asked = st.form_submit_button("Ask both", type="primary", key="ask_both")
    if asked and question.strip():
        messages = [{"role": "user", "content": question.strip()}]
        with st.spinner("Both models are answering…"):
            replies = [ask(messages, model_a), ask(messages, model_b)]
        st.session_state.arena = None if None in replies else {
            "prompt": messages,
            "answers": [(model, reply.text, interaction_id)
                        for model, (reply, interaction_id) in zip((model_a, model_b), replies)],
        }
    duel = st.session_state.get("arena")
    if duel:
        show_duel(duel)


def show_duel(duel: dict) -> None:
    columns = st.columns(2)
    for index, (column, (model, text, _)) in enumerate(zip(columns, duel["answers"])):
        with column.container(border=True):
            st.markdown(f"**{'AB'[index]} · {model}**")
            st.markdown(text)
            if st.button(f"{'AB'[index]} is better", key=f"pick_{index}", type="primary"):
                pick(duel, index)


def pick(duel: dict, winner: int) -> None:
    (_, chosen, _), (_, rejected, loser_id) = duel["answers"][winner], duel["answers"][1 - winner]

    def action(session) -> str:
        pair = create_pair(session, duel["prompt"], chosen, rejected, PairSource.arena, interaction_id=loser_id)
        return f"Pending pair #{pair.id} added to the review queue." if pair else "This pair is in the queue already."

    act(action, after=lambda: st.session_state.pop("arena", None))


mode = st.segmented_control("Mode", ["Chat", "Arena"], default="Chat", key="mode")
if mode == "Arena":
    arena()
else:
    chat()
