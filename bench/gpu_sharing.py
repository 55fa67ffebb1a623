"""Serving and training on one GPU: what Slack users see while a run trains beside vLLM, the run process's GPU
memory from start to registration, and a run that cannot fit being refused before it loads anything.

Called by bench/gpu.py against a running vLLM whose memory share was sized for the run
(serving.gpu_memory). The run goes through the real path: approved pairs in the database,
`start_run_now` (as `flywheel train now` and the scheduler call it), its own process, evaluation, gate.
"""

from __future__ import annotations

import statistics
import time

from bench.prompts import chat_prompts
from bench.serving import vllm_level, with_system
from bench.training import MemorySampler, fixed_length_pairs
from bench.training_processes import ADMIN, TERMINAL, approve_pairs
from serving.engine import BASE_MODEL_NAME
from storage.db import get_engine, session_scope
from storage.runs import get_run
from training.launcher import start_run_now

PROBES = {1: 2, 8: 8}  # concurrency -> prompts of one latency probe
PROBE_TOKENS = 64


def probe(url: str, system_prompt: str, concurrency: int) -> dict:
    prompts = with_system(chat_prompts(PROBES[concurrency]), system_prompt)
    return vllm_level(url, BASE_MODEL_NAME, prompts, PROBE_TOKENS, concurrency, latency=True, throughput=False)


def phase(run) -> str:
    if run.status.value != "running":
        return run.status.value
    if not run.current_step:
        return "loading"
    return "evaluating" if run.total_steps and run.current_step >= run.total_steps else "training"


def summarize(probes: list[dict]) -> dict:
    """Per phase and concurrency: medians of the probes' TTFT and ITL p50, the worst p99."""
    groups: dict[str, list[dict]] = {}
    for row in probes:
        groups.setdefault(f"{row['phase']}, concurrency {row['concurrency']}", []).append(row)
    return {key: {"probes": len(rows),
                  "ttft_p50_ms": statistics.median(r["ttft_ms"]["p50"] for r in rows),
                  "ttft_p99_ms": max(r["ttft_ms"]["p99"] for r in rows),
                  "itl_p50_ms": statistics.median(r["itl_ms"]["p50"] for r in rows),
                  "itl_p99_ms": max(r["itl_ms"]["p99"] for r in rows)} for key, rows in groups.items()}


def wait(engine, run_id: int, timeout_s: float, each=lambda phase: None):
    """Until the run ends, call `each` with its phase, outside any transaction: a read kept open on SQLite
    would stop the run process from writing its steps."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with session_scope(engine) as session:
            run = get_run(session, run_id)
            if run.status in TERMINAL:
                return run.status.value, run.error, dict(run.eval_metrics or {}), run.pid
            current = phase(run)
        each(current)
        time.sleep(0.2)
    raise TimeoutError(f"run {run_id} did not finish in {timeout_s:.0f} s")


def run_beside_vllm(settings, url: str, *, pairs: int, overrides: dict, timeout_s: float = 400) -> dict:
    """Idle latency first, then latency while one run loads, trains and evaluates, and its memory."""
    engine = get_engine(settings.database_url)
    approve_pairs(engine, fixed_length_pairs(pairs, overrides.get("max_length", settings.max_length)))
    probes = [{"phase": "idle", "concurrency": c, **probe(url, settings.system_prompt, c)} for _ in range(3) for c in PROBES]
    sampler, started = MemorySampler(), time.monotonic()
    sampler.start()
    run_id = start_run_now(settings, ADMIN, overrides=overrides)

    def measure(current: str) -> None:
        sampler.phase = current
        for concurrency in PROBES:
            probes.append({"phase": current, "concurrency": concurrency, **probe(url, settings.system_prompt, concurrency)})

    status, error, metrics, pid = wait(engine, run_id, timeout_s, measure)
    peaks = sampler.stop()
    return {"run_id": run_id, "overrides": overrides, "status": status, "error": error, "run_s": time.monotonic() - started,
            "gate": metrics.get("gate"), "steps": metrics.get("steps"), "tokens_per_s": metrics.get("tokens_per_s"),
            "reward_accuracy": metrics.get("reward_accuracy"), "run_process_peak_mib": peaks.pop(pid, None),
            "run_process_peak_mib_by_phase": sampler.phase_peaks.get(pid), "other_processes_peak_mib": peaks, "latency": summarize(probes), "probes": probes}


def refused_run(settings, overrides: dict) -> dict:
    """A run asking for more memory than is free: it must fail fast, with the reason, before loading the model."""
    engine = get_engine(settings.database_url)
    started = time.monotonic()
    run_id = start_run_now(settings, ADMIN, overrides=overrides)
    status, error, _, _ = wait(engine, run_id, 300)
    return {"run_id": run_id, "overrides": overrides, "status": status, "error": error, "seconds": time.monotonic() - started}
