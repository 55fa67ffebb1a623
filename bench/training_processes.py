"""One DPO run through the real entry point (`flywheel train run ID`, the launcher, the database) with 1 process
and then with N under `accelerate launch`, on the same approved pairs: wall time, tokens/s, and what the run
recorded. Ratios are against the first process count.

    PYTHONPATH=/tmp/site:. python -m bench.training_processes --processes 1,2 --pairs 1024 \
        --model-dir /tmp/models/SmolLM2-135M-Instruct.Q4_1.gguf --out /tmp/bench-processes.json

Each process count gets a fresh SQLite database in its own folder under --home.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from bench.training import SYSTEM_PROMPT, model_folder
from flywheel.settings import load_settings
from storage.db import make_engine, session_scope, upgrade
from storage.models import PairSource, RunStatus
from storage.pairs import approve_pair, create_pair
from storage.runs import get_run, run_metrics
from storage.users import Actor, Role
from training.launcher import start_run_now
from training.synthetic import synthetic_pairs

ADMIN = Actor("bench", Role.admin)
TERMINAL = (RunStatus.succeeded, RunStatus.failed, RunStatus.cancelled)


def approve_pairs(engine, records: list[dict]) -> None:
    """Store conversational preference records as approved pairs (what reviewers leave behind)."""
    with session_scope(engine) as session:
        for record in records:
            pair = create_pair(session, record["prompt"], record["chosen"][0]["content"],
                               record["rejected"][0]["content"], PairSource.imported)
            if pair is not None:
                approve_pair(session, pair.id, ADMIN)


def wait_for_run(engine, run_id: int, timeout_s: float) -> None:
    deadline, shown = time.monotonic() + timeout_s, -1
    while time.monotonic() < deadline:
        with session_scope(engine) as session:
            run = get_run(session, run_id)
            if run.current_step != shown:
                shown = run.current_step
                print(f"  run {run_id}: {run.status.value}, step {run.current_step}/{run.total_steps}", file=sys.stderr)
            if run.status in TERMINAL:
                return
        time.sleep(1)
    raise TimeoutError(f"run {run_id} did not finish in {timeout_s:.0f} s")


def run_with(processes: int, args: argparse.Namespace, model_dir: Path) -> dict:
    home = args.home / f"processes-{processes}"
    url = f"sqlite:///{home / 'flywheel.db'}"
    home.mkdir(parents=True, exist_ok=True)
    upgrade(url)
    engine = make_engine(url)
    approve_pairs(engine, synthetic_pairs(args.pairs))
    settings = load_settings(
        home=home, database_url=url, base_model_path=model_dir, train_processes=processes,
        system_prompt=SYSTEM_PROMPT, epochs=args.epochs, batch_size=args.batch_size, max_length=args.max_length,
        learning_rate=args.learning_rate, eval_fraction=0.25, min_pair_chars=1,
    )
    start = time.perf_counter()
    run_id = start_run_now(settings, ADMIN)
    wait_for_run(engine, run_id, args.timeout)
    seconds = time.perf_counter() - start
    with session_scope(engine) as session:
        run, steps = get_run(session, run_id), run_metrics(session, run_id)
        rates = sorted(s.values["tokens_per_s"] for s in steps if "tokens_per_s" in s.values)
        metrics = run.eval_metrics or {}
        return {
            "processes": processes, "status": run.status.value, "error": run.error, "steps": len(steps),
            "run_s": round(seconds, 1), "tokens_per_s": round(rates[len(rates) // 2], 1) if rates else None,
            "reward_accuracy": metrics.get("reward_accuracy"), "gate": metrics.get("gate"),
            "log": str(settings.logs_dir / f"run-{run_id}.log"),
        }


def print_table(rows: list[dict]) -> None:
    first = rows[0]
    print(f"{'processes':>9} {'status':>10} {'steps':>5} {'run s':>7} {'tok/s':>9} {'x tok/s':>8} {'reward acc':>10}")
    for row in rows:
        speed = (row["tokens_per_s"] or 0) / (first["tokens_per_s"] or 1)
        accuracy = row["reward_accuracy"] if row["reward_accuracy"] is not None else float("nan")
        print(f"{row['processes']:>9} {row['status']:>10} {row['steps']:>5} {row['run_s']:>7.1f} "
              f"{row['tokens_per_s'] or 0:>9.1f} {speed:>8.2f} {accuracy:>10.3f}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--processes", default="1,2", help="comma-separated process counts (GPUs)")
    parser.add_argument("--pairs", type=int, default=1024, help="synthetic approved pairs (1/4 held out)")
    parser.add_argument("--model-dir", type=Path, required=True, help="model folder or .gguf file")
    parser.add_argument("--home", type=Path, default=Path("/tmp/flywheel-bench-processes"))
    parser.add_argument("--epochs", type=float, default=1)
    parser.add_argument("--batch-size", type=int, default=16, help="per process")
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> list[dict]:
    args = parse_args(argv)
    model_dir = model_folder(args.model_dir)
    rows = [run_with(int(n), args, model_dir) for n in args.processes.split(",")]
    print_table(rows)
    if args.out:
        args.out.write_text(json.dumps(rows, indent=2))
    return rows


if __name__ == "__main__":
    main()
