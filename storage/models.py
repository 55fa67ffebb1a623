"""ORM models: every entity of the data model (see ARCHITECTURE.md)."""

from __future__ import annotations

import enum
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (
    JSON, Boolean, DateTime, Enum, Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint, true,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class UTCDateTime(TypeDecorator):
    """Timezone-aware UTC on every backend (SQLite drops the zone; this puts it back)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime: pass an aware UTC datetime")
        return value.astimezone(timezone.utc) if value is not None else None

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        # PostgreSQL answers in the session's time zone; SQLite without one. Both come back as UTC.
        return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON, datetime: UTCDateTime()}


def _enum(cls: type[enum.Enum]) -> Enum:
    # Stored as plain strings: portable across SQLite and PostgreSQL, and readable in dumps.
    return Enum(cls, native_enum=False, length=20, values_callable=lambda e: [m.value for m in e])


class InteractionStatus(str, enum.Enum):
    pending = "pending"
    ok = "ok"
    failed = "failed"


class Vote(str, enum.Enum):
    up = "up"
    down = "down"


class PairSource(str, enum.Enum):
    alternative = "alternative"
    vote_contrast = "vote_contrast"
    arena = "arena"
    imported = "imported"


class PairStatus(str, enum.Enum):
    pending = "pending"
    approved = "approved"
    rejected = "rejected"


class RunKind(str, enum.Enum):
    # Stored as a plain VARCHAR(20) without a CHECK constraint (_enum): a new kind needs no migration.
    dpo = "dpo"
    sft = "sft"
    kto = "kto"  # unpaired 👍/👎 (and approved pairs) as desirable / undesirable examples


class RunStatus(str, enum.Enum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"


class VersionStatus(str, enum.Enum):
    candidate = "candidate"
    active = "active"
    canary = "canary"
    retired = "retired"


class Role(str, enum.Enum):
    reviewer = "reviewer"
    admin = "admin"


class SignInOutcome(str, enum.Enum):
    ok = "ok"
    failed = "failed"  # wrong password, unknown user or disabled account: counted towards a lockout
    locked = "locked"  # refused without checking the password: not counted again


class Conversation(Base):
    __tablename__ = "conversation"
    __table_args__ = (UniqueConstraint("source", "team_id", "channel_id", "thread_ts", name="uq_conversation_thread"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    source: Mapped[str] = mapped_column(String(20))  # "slack" or "playground"
    team_id: Mapped[str] = mapped_column(String(64), default="")
    channel_id: Mapped[str] = mapped_column(String(64), default="")
    thread_ts: Mapped[str] = mapped_column(String(64), default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    interactions: Mapped[list[Interaction]] = relationship(back_populates="conversation")


def last_user_message(messages: list[dict[str, Any]]) -> str:
    """What the person asked: the last user turn of chat messages ("" when there is none)."""
    return next((m.get("content", "") for m in reversed(messages) if m.get("role") == "user"), "")


class Interaction(Base):
    __tablename__ = "interaction"
    __table_args__ = (
        Index("ix_interaction_created", "created_at"),
        Index("ix_interaction_status_created", "status", "created_at"),  # questions still waiting for an answer
        Index("ix_interaction_served_created", "served_model", "created_at"),  # feedback share per version
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    conversation_id: Mapped[int] = mapped_column(ForeignKey("conversation.id"), index=True)
    event_id: Mapped[str | None] = mapped_column(String(128), unique=True)  # Slack event id: retries dedupe here
    user_id: Mapped[str] = mapped_column(String(64), default="")
    prompt_messages: Mapped[list[Any]] = mapped_column(default=list)
    prompt_hash: Mapped[str] = mapped_column(String(64), default="", index=True)  # finds the same prompt again
    answer: Mapped[str] = mapped_column(Text, default="")
    model_version_id: Mapped[int | None] = mapped_column(ForeignKey("model_version.id"))
    served_model: Mapped[str] = mapped_column(String(128), default="")
    question_ts: Mapped[str | None] = mapped_column(String(64))  # ts of the Slack message that asked
    message_ts: Mapped[str | None] = mapped_column(String(64), index=True)  # ts of the posted answer
    replace_ts: Mapped[str | None] = mapped_column(String(64))  # Try again: answer in place of this message
    latency_ms: Mapped[float | None] = mapped_column(Float)
    prompt_tokens: Mapped[int | None] = mapped_column(Integer)
    completion_tokens: Mapped[int | None] = mapped_column(Integer)
    status: Mapped[InteractionStatus] = mapped_column(_enum(InteractionStatus), default=InteractionStatus.pending)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    conversation: Mapped[Conversation] = relationship(back_populates="interactions")
    feedback: Mapped[list[Feedback]] = relationship(back_populates="interaction")

    @property
    def prompt_text(self) -> str:
        return last_user_message(self.prompt_messages)


class Feedback(Base):
    __tablename__ = "feedback"
    __table_args__ = (
        UniqueConstraint("interaction_id", "user_id", name="uq_feedback_interaction_user"),
        Index("ix_feedback_status_id", "status", "id"),  # the votes review queue: newest first by status
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    interaction_id: Mapped[int] = mapped_column(ForeignKey("interaction.id"), index=True)
    user_id: Mapped[str] = mapped_column(String(64))
    vote: Mapped[Vote] = mapped_column(_enum(Vote))
    comment: Mapped[str | None] = mapped_column(Text)
    # Reviewed like a pair before it may teach a KTO run; a changed vote waits for review again.
    status: Mapped[PairStatus] = mapped_column(
        _enum(PairStatus), default=PairStatus.pending, server_default=PairStatus.pending.value)
    reviewer: Mapped[str | None] = mapped_column(String(64))
    reviewed_at: Mapped[datetime | None] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    interaction: Mapped[Interaction] = relationship(back_populates="feedback")


class Alternative(Base):
    __tablename__ = "alternative"

    id: Mapped[int] = mapped_column(primary_key=True)
    interaction_id: Mapped[int] = mapped_column(ForeignKey("interaction.id"), index=True)
    user_id: Mapped[str] = mapped_column(String(64))
    text: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class PreferencePair(Base):
    __tablename__ = "preference_pair"
    __table_args__ = (
        Index("ix_pair_status_created", "status", "created_at"),
        Index("ix_pair_status_id", "status", "id"),  # the review queue: newest (highest id) first by status
        Index("ix_pair_status_source", "status", "source"),  # pairs by status and source, counted at each scrape
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    prompt: Mapped[list[Any]] = mapped_column()  # chat messages, TRL's conversational format
    chosen: Mapped[str] = mapped_column(Text)
    rejected: Mapped[str] = mapped_column(Text)
    source: Mapped[PairSource] = mapped_column(_enum(PairSource))
    status: Mapped[PairStatus] = mapped_column(_enum(PairStatus), default=PairStatus.pending)
    # One pair per (prompt, chosen, rejected): the same feedback delivered twice lands once.
    dedupe_key: Mapped[str] = mapped_column(String(64), unique=True)
    interaction_id: Mapped[int | None] = mapped_column(ForeignKey("interaction.id"), index=True)
    alternative_id: Mapped[int | None] = mapped_column(ForeignKey("alternative.id"))
    channel_id: Mapped[str] = mapped_column(String(64), default="", index=True)
    original_chosen: Mapped[str | None] = mapped_column(Text)  # set when a reviewer edited the chosen text
    reviewer: Mapped[str | None] = mapped_column(String(64))
    reviewed_at: Mapped[datetime | None] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class DatasetSnapshot(Base):
    __tablename__ = "dataset_snapshot"

    id: Mapped[int] = mapped_column(primary_key=True)
    content_hash: Mapped[str] = mapped_column(String(64), unique=True)
    pair_ids: Mapped[list[Any]] = mapped_column(default=list)
    feedback_ids: Mapped[list[Any]] = mapped_column(default=list, server_default="[]")  # votes in a KTO snapshot
    train_count: Mapped[int] = mapped_column(Integer)
    eval_count: Mapped[int] = mapped_column(Integer)
    path: Mapped[str] = mapped_column(String(1024))
    # approved pairs left out, by reason ("duplicate": 3, ...): the data's quality, shown with the run
    dropped: Mapped[dict[str, Any]] = mapped_column(default=dict, server_default="{}")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class TrainingRun(Base):
    __tablename__ = "training_run"

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[RunKind] = mapped_column(_enum(RunKind), default=RunKind.dpo)
    status: Mapped[RunStatus] = mapped_column(_enum(RunStatus), default=RunStatus.queued, index=True)
    # True while queued or running, NULL after: the unique constraint allows one such run at a time,
    # enforced by the database even when two schedulers race.
    active_slot: Mapped[bool | None] = mapped_column(Boolean, unique=True, default=True)
    config: Mapped[dict[str, Any]] = mapped_column(default=dict)
    snapshot_id: Mapped[int | None] = mapped_column(ForeignKey("dataset_snapshot.id"))
    # The version the run starts from. A plain id: model_version already references training_run, and
    # Alembic's create_table drops the ALTER-added half of such a cycle on PostgreSQL.
    parent_version_id: Mapped[int | None] = mapped_column(Integer)
    triggered_by: Mapped[str] = mapped_column(String(64), default="scheduler")
    current_step: Mapped[int] = mapped_column(Integer, default=0)
    total_steps: Mapped[int | None] = mapped_column(Integer)
    eval_metrics: Mapped[dict[str, Any]] = mapped_column(default=dict)
    not_registered_reason: Mapped[str | None] = mapped_column(Text)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    pid: Mapped[int | None] = mapped_column(Integer)
    log_path: Mapped[str | None] = mapped_column(String(1024))
    output_dir: Mapped[str | None] = mapped_column(String(1024))
    error: Mapped[str | None] = mapped_column(Text)
    mlflow_run: Mapped[dict[str, Any] | None] = mapped_column()  # {"experiment_id", "run_id"} when tracked in MLflow
    heartbeat_at: Mapped[datetime | None] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column()
    finished_at: Mapped[datetime | None] = mapped_column()

    snapshot: Mapped[DatasetSnapshot | None] = relationship()
    metrics: Mapped[list[RunMetric]] = relationship(order_by="RunMetric.step", cascade="all, delete-orphan")


class RunMetric(Base):
    """One logged training step of a run: loss, reward accuracy, margin, learning rate, tokens/s."""

    __tablename__ = "run_metric"
    __table_args__ = (UniqueConstraint("run_id", "step", name="uq_run_metric_step"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("training_run.id"), index=True)
    step: Mapped[int] = mapped_column(Integer)
    values: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ModelVersion(Base):
    __tablename__ = "model_version"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)  # the name vLLM serves it under
    adapter_path: Mapped[str] = mapped_column(String(1024))
    base_model: Mapped[str] = mapped_column(String(1024))
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("model_version.id"))
    training_run_id: Mapped[int | None] = mapped_column(ForeignKey("training_run.id"))
    metrics: Mapped[dict[str, Any]] = mapped_column(default=dict)
    regression_answers: Mapped[list[Any]] = mapped_column(default=list)
    status: Mapped[VersionStatus] = mapped_column(_enum(VersionStatus), default=VersionStatus.candidate, index=True)
    canary_share: Mapped[float] = mapped_column(Float, default=0.0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    promoted_at: Mapped[datetime | None] = mapped_column()


class AuditEvent(Base):
    __tablename__ = "audit_event"

    id: Mapped[int] = mapped_column(primary_key=True)
    actor: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(40), index=True)
    target_type: Mapped[str] = mapped_column(String(40))
    target_id: Mapped[int | None] = mapped_column(Integer)
    details: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)


class User(Base):
    __tablename__ = "app_user"

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(String(256))
    role: Mapped[Role] = mapped_column(_enum(Role))
    # Accounts are disabled, never deleted: the audit trail and reviewed pairs keep naming them.
    enabled: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_sign_in_at: Mapped[datetime | None] = mapped_column()


class SignInAttempt(Base):
    """One sign-in try, by the username as typed (an account or not) and the client it came from."""

    __tablename__ = "sign_in_attempt"
    __table_args__ = (
        Index("ix_sign_in_attempt_username", "username", "created_at"),
        Index("ix_sign_in_attempt_client", "client", "created_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(64))
    client: Mapped[str] = mapped_column(String(64), default="")  # the browser's address; "" when unknown
    outcome: Mapped[SignInOutcome] = mapped_column(_enum(SignInOutcome))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Lease(Base):
    """A named lock with an expiry: one active scheduler, one run at a time, across processes."""

    __tablename__ = "lease"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    holder: Mapped[str] = mapped_column(String(128))
    expires_at: Mapped[datetime] = mapped_column()
