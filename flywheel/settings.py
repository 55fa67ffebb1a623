"""The one typed settings object: every knob Flywheel has, read from `FLYWHEEL_*` env vars and `.env`.

Slack's conventional names (SLACK_BOT_TOKEN, SLACK_APP_TOKEN, SLACK_SIGNING_SECRET) are accepted
as they are. Secrets are `SecretStr`, so repr, logs and error messages never show them.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

MAX_AUTO_BOT_PROCESSES = 8  # past a few processes the burst's acks are spread thin enough; each takes ~140 MB


def _slack_alias(name: str) -> AliasChoices:
    return AliasChoices(f"FLYWHEEL_{name}", name)


class SettingsError(ValueError):
    """Settings could not be read; the message names each variable and what is wrong with it."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="FLYWHEEL_", env_file=".env", extra="ignore", populate_by_name=True
    )

    # --- where things live -------------------------------------------------------------
    home: Path = Field(Path("var"), description="Folder for the database, models, adapters, runs and logs.")
    database_url: str = Field("", description="SQLAlchemy URL; empty means SQLite at HOME/flywheel.db.")

    # --- the base model ----------------------------------------------------------------
    base_model_path: Path | None = Field(
        None, description="Local Hugging Face model folder; empty means the bundled SmolLM2-135M-Instruct."
    )

    # --- vLLM --------------------------------------------------------------------------
    vllm_host: str = Field("127.0.0.1", description="Host the vLLM server listens on.")
    vllm_port: int = Field(8000, ge=1, le=65535, description="Port of the vLLM server.")
    vllm_url: str = Field("", description="Base URL of an already running vLLM server; empty means http://HOST:PORT.")
    vllm_max_model_len: int = Field(2048, ge=128, description="Context length vLLM serves.")
    vllm_max_lora_rank: int = Field(16, ge=1, description="Largest LoRA rank vLLM accepts.")
    vllm_max_loras: int = Field(4, ge=1, description="Adapters vLLM keeps in one batch.")
    vllm_max_num_seqs: int = Field(
        64, ge=1, description="Requests vLLM runs at once (--max-num-seqs); also how many answers the bot writes at once."
    )
    vllm_kv_cache_gib: int = Field(2, ge=1, description="KV cache size on the CPU build (VLLM_CPU_KVCACHE_SPACE).")
    vllm_cpu_reserved_cores: int = Field(
        0, ge=0, description="Cores the CPU build keeps from the model for its scheduler (vLLM's own default: 1)."
    )
    vllm_gpu_memory_utilization: float = Field(
        0, ge=0, le=1, description="GPU memory share vLLM may take; 0 leaves room on its GPU for a training run "
        "with the training settings below (README: GPU)."
    )
    vllm_quantization: Literal["", "fp8"] = Field(
        "", description="Weight quantization of the served model on CUDA: fp8 halves the bytes read per token "
        "(Hopper and Ada GPUs compute it natively); empty serves the model's own dtype."
    )
    vllm_tensor_parallel_size: int = Field(1, ge=1, description="GPUs per vLLM server (CUDA only).")
    vllm_extra_args: str = Field("", description="Extra command-line arguments passed to vLLM as they are.")
    vllm_startup_timeout_s: float = Field(600, gt=0, description="How long to wait for vLLM to become ready.")
    request_timeout_s: float = Field(60, gt=0, description="Timeout of one model request.")
    request_retries: int = Field(2, ge=0, description="Retries of a failed model request, with backoff.")
    max_answer_tokens: int = Field(512, ge=1, description="Most tokens in one answer.")
    stream_chunk_tokens: int = Field(
        16, ge=1, description="Tokens vLLM puts in each chunk of a streamed answer (the first comes at once)."
    )
    temperature: float = Field(0.0, ge=0, description="Sampling temperature of answers (0 = greedy).")
    system_prompt: str = Field(
        "You are a helpful assistant for an engineering team. Answer concisely.",
        description="System message put before every conversation.",
    )

    # --- Slack -------------------------------------------------------------------------
    slack_bot_token: SecretStr | None = Field(
        None, validation_alias=_slack_alias("SLACK_BOT_TOKEN"), description="Bot User OAuth Token (xoxb-…)."
    )
    slack_app_token: SecretStr | None = Field(
        None, validation_alias=_slack_alias("SLACK_APP_TOKEN"), description="App-level token (xapp-…) for Socket Mode."
    )
    slack_signing_secret: SecretStr | None = Field(
        None, validation_alias=_slack_alias("SLACK_SIGNING_SECRET"), description="Signing secret for HTTP mode."
    )
    slack_api_url: str = Field("https://slack.com/api/", description="Slack Web API base URL.")
    bot_mode: Literal["socket", "http"] = Field("socket", description="Socket Mode (app token) or HTTP (signing secret).")
    bot_port: int = Field(3000, ge=1, le=65535, description="Port of the bot in HTTP mode.")
    pii_redaction: bool = Field(False, description="Redact emails, phone numbers and tokens before storing text.")
    rate_limit_per_minute: int = Field(10, ge=1, description="Questions one user may ask per minute.")
    stream_answers: bool = Field(True, description="Show answers in Slack while they are written; off posts them complete.")
    stream_interval_s: float = Field(
        1.0, ge=0, description="Least seconds between two message updates in one channel (Slack allows about 1/s)."
    )
    answer_workers: int = Field(
        0, ge=0, description="Answers the model is asked for at once (an answer's last write to Slack, at the "
        "channel's pace, holds none); 0 means FLYWHEEL_VLLM_MAX_NUM_SEQS (the model's capacity)."
    )
    answer_queue_size: int = Field(
        500, ge=1, description="Questions that may wait for an answer; beyond it the asker is told the bot is busy "
        "(the question is kept, with Try again).",
    )
    resume_window_minutes: float = Field(
        60, ge=0, description="Unanswered questions this recent are answered when the bot starts again."
    )
    bot_processes: int = Field(
        0, ge=0, le=64, description="Bot processes: each acks Slack's requests on its own interpreter (HTTP: one "
        "shared listening socket; Socket Mode: a connection each) and answers its share of the channels. "
        "0: one per CPU core, at most 8 (a burst is acked and first answered sooner than by one; Reliability, Load).",
    )
    bot_answer_processes: int = Field(
        0, ge=0, le=64, description="Processes that only answer (each its share of the channels) while the "
        "FLYWHEEL_BOT_PROCESSES others only receive, store and ack, so that no ack waits behind answers being "
        "written. 0: every bot process also answers.",
    )
    bot_listener_threads: int = Field(
        32, ge=1, description="Threads that store, enqueue and acknowledge Slack requests (both modes)."
    )

    # --- training ----------------------------------------------------------------------
    min_new_pairs: int = Field(32, ge=1, description="Approved pairs since the last run that start a new (DPO) run.")
    min_new_votes: int = Field(
        64, ge=0, description="With fewer new approved pairs than FLYWHEEL_MIN_NEW_PAIRS: votes that may teach, cast "
        "or reviewed since the last run, that start a KTO run instead (0: the scheduler never starts KTO).",
    )
    kto_pending_votes: bool = Field(
        False, description="Votes nobody reviewed teach KTO runs too (rejected votes never do); off: only approved votes.",
    )
    kto_pairs: bool = Field(
        True, description="Approved pairs teach KTO runs too (chosen answer desirable, rejected undesirable); a vote "
        "on an answer a pair already holds then counts once.",
    )
    min_interval_minutes: float = Field(60, ge=0, description="Least time between two scheduled runs.")
    scheduler_interval_s: float = Field(60, gt=0, description="How often the scheduler checks.")
    heartbeat_timeout_s: float = Field(300, gt=0, description="A running run silent this long is marked failed.")
    eval_fraction: float = Field(0.2, gt=0, lt=1, description="Share of prompts held out for evaluation.")
    min_pair_chars: int = Field(2, ge=1, description="Chosen/rejected answers shorter than this are dropped.")
    max_pair_chars: int = Field(
        8000, ge=1, description="Chosen/rejected answers longer than this are dropped from snapshots (pasted logs, "
        "runaway generations): truncated in training, they would teach nothing.",
    )
    lora_r: int = Field(16, ge=1, description="LoRA rank (at most FLYWHEEL_VLLM_MAX_LORA_RANK to be served).")
    lora_alpha: int = Field(32, ge=1, description="LoRA scaling alpha.")
    lora_dropout: float = Field(0.05, ge=0, lt=1, description="LoRA dropout.")
    lora_target_modules: str = Field("q_proj,k_proj,v_proj,o_proj", description="Comma-separated module names.")
    dpo_beta: float = Field(0.1, gt=0, description="DPO (and KTO) beta: how far the policy may move from the reference.")
    sft_weight: float = Field(1.0, ge=0, description="Weight of the SFT loss on chosen answers beside DPO's.")
    # One pass on the 256-pair chat-ops loop (bench.learning --scenario chatops --training default; README,
    # Learning), 2 CPU cores, about 4.7 min: at 1e-3 every held-out family learnt, but 9 of the 60 general-knowledge
    # answers lost (the default gate refuses that); at 5e-4, 23 of 24 and 6 lost; at 3e-4, 9 of 24 and 3 lost.
    learning_rate: float = Field(5e-4, gt=0, description="Peak learning rate.")
    epochs: float = Field(1, gt=0, description="Passes over the training split.")
    batch_size: int = Field(4, ge=1, description="Pairs per device per step.")
    gradient_accumulation_steps: int = Field(1, ge=1, description="Steps accumulated per optimizer update.")
    max_length: int = Field(256, ge=16, description="Longest prompt + answer in tokens; longer pairs are truncated.")
    qlora: bool = Field(False, description="4-bit NF4 QLoRA on CUDA (bitsandbytes).")
    liger_kernels: bool = Field(
        False, description="Liger's Triton kernels (RMSNorm, RoPE, SwiGLU) in training on CUDA (liger-kernel, in the "
        "gpu extra): 1.26x tokens/s for LoRA of an 8B model on an H200."
    )
    train_processes: int = Field(1, ge=1, description="Training processes (GPUs); above 1 runs use `accelerate launch`.")
    train_launch_args: str = Field("", description="Extra `accelerate launch` arguments (e.g. an FSDP config file).")
    gate_metric: Literal["reward_accuracy", "key_content_share", "rouge_l", "judge_win_rate"] = Field(
        "reward_accuracy", description="The held-out metric a candidate must beat the active version on: preference "
        "accuracy (log-probs), or from its greedy answers the share saying the chosen answer's key content, ROUGE-L, "
        "or the LLM judge's win rate (needs FLYWHEEL_JUDGE_URL; the active version counts 1 minus it).",
    )
    judge_url: str = Field("", description="An OpenAI-compatible endpoint (…/v1) whose model compares the candidate's "
                           "and the active version's held-out answers in every run; empty: no judge.")
    judge_model: str = Field("", description="The judge's model name; empty: the first the endpoint lists.")
    judge_api_key: SecretStr | None = Field(None, description="The judge endpoint's API key, if it wants one.")
    gate_margin: float = Field(0.0, description="What a candidate must add over the active one on gate_metric.")
    gate_max_knowledge_drop: float = Field(
        0.1, ge=0, le=1, description="How much of the shipped general-knowledge questions (training/"
        "general_knowledge.jsonl) a candidate may answer right less often than the active one before the gate "
        "refuses it as forgetting.",
    )
    auto_promote: bool = Field(False, description="Promote a registered candidate without an admin.")
    canary_share: float = Field(0.0, ge=0, le=1, description="Share of users routed to a canary version.")

    # --- observability -----------------------------------------------------------------
    metrics_enabled: bool = Field(True, description="Serve Prometheus metrics at /metrics from each long-running process.")
    metrics_host: str = Field("127.0.0.1", description="Address the /metrics endpoints listen on.")
    serve_metrics_port: int = Field(
        9471, ge=1, le=65535, description="/metrics port of `flywheel serve` (vLLM's own is on its API port)."
    )
    bot_metrics_port: int = Field(9472, ge=1, le=65535, description="/metrics port of `flywheel bot`.")
    scheduler_metrics_port: int = Field(
        9473, ge=1, le=65535, description="/metrics port of `flywheel scheduler` (with the database gauges)."
    )
    dashboard_metrics_port: int = Field(9474, ge=1, le=65535, description="/metrics port of `flywheel dashboard`.")
    feedback_window_hours: float = Field(
        24, gt=0, description="Window of the 👍 / 👎 share gauges (the active version's latest answers; the "
        "previous version's answers before the promotion).",
    )
    mlflow_enabled: bool = Field(True, description="Track training runs in MLflow and mirror promotions as model aliases.")
    mlflow_tracking_uri: str = Field(
        "", description="MLflow tracking URI (a team's server: http://…); empty means sqlite at HOME/mlflow/mlflow.db."
    )
    mlflow_experiment: str = Field("flywheel", description="MLflow experiment and registered model name.")
    model_card_license: str = Field("apache-2.0", description="License named in each version's model card.")

    # --- dashboard ---------------------------------------------------------------------
    dashboard_host: str = Field("127.0.0.1", description="Address the dashboard listens on.")
    dashboard_port: int = Field(8501, ge=1, le=65535, description="Port of the dashboard.")
    admin_username: str = Field("admin", description="First admin account created by `flywheel init`.")
    admin_password: SecretStr | None = Field(None, description="Its password; asked for when empty.")
    user_password: SecretStr | None = Field(
        None, description="Password for `flywheel users add` / `set-password`; asked for (never echoed) when empty."
    )
    session_idle_minutes: float = Field(
        60, gt=0, description="A dashboard session without a click for this long is signed out."
    )

    @model_validator(mode="after")
    def _derive_defaults(self) -> "Settings":
        if not self.database_url:
            self.database_url = f"sqlite:///{(self.home / 'flywheel.db').as_posix()}"
        if not self.vllm_url:
            self.vllm_url = f"http://{self.vllm_host}:{self.vllm_port}"
        if not self.mlflow_tracking_uri:
            self.mlflow_tracking_uri = f"sqlite:///{(self.mlflow_dir / 'mlflow.db').as_posix()}"
        if self.gate_metric == "judge_win_rate" and not self.judge_url:
            raise ValueError("FLYWHEEL_GATE_METRIC=judge_win_rate needs a judge: set FLYWHEEL_JUDGE_URL")
        return self

    def __repr_args__(self):
        # A database URL may carry a password: show it masked, like the SecretStr fields.
        for name, value in super().__repr_args__():
            yield name, (masked_url(value) if name == "database_url" else value)

    @property
    def models_dir(self) -> Path:
        return self.home / "models"

    @property
    def adapters_dir(self) -> Path:
        return self.home / "adapters"

    @property
    def runs_dir(self) -> Path:
        return self.home / "runs"

    @property
    def logs_dir(self) -> Path:
        return self.home / "logs"

    @property
    def mlflow_dir(self) -> Path:
        return self.home / "mlflow"

    @property
    def base_model_dir(self) -> Path:
        return self.base_model_path or self.models_dir / "SmolLM2-135M-Instruct"

    @property
    def bot_process_count(self) -> int:
        return self.bot_processes or min(os.cpu_count() or 1, MAX_AUTO_BOT_PROCESSES)

    @property
    def answer_workers_count(self) -> int:
        return self.answer_workers or self.vllm_max_num_seqs

    @property
    def target_modules(self) -> list[str]:
        return [m.strip() for m in self.lora_target_modules.split(",") if m.strip()]


def masked_url(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:  # not a URL SQLAlchemy can parse: hide all of it rather than risk a secret
        return "***"


def load_settings(**overrides) -> Settings:
    """Read settings; turn pydantic's errors into one message naming each bad variable."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            if not err["loc"]:  # a rule across settings: its message names them
                problems.append(err["msg"].removeprefix("Value error, "))
                continue
            field = str(err["loc"][0])
            variable = field if field.startswith(("SLACK_", "FLYWHEEL_")) else f"FLYWHEEL_{field.upper()}"
            problems.append(f"{variable}: {err['msg']}")
        raise SettingsError("invalid settings:\n  " + "\n  ".join(problems)) from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return load_settings()
