"""The README's GPU figures for an 8B-class model on one GPU, in sessions that each fit a 10-minute window:

    python -m bench.gpu serving --model-dir M --out DIR   # bench.serving: bf16, fp8, n-gram servers side by side
    python -m bench.gpu loop --model-dir M --out DIR      # `flywheel serve`, hot swap under load, a QLoRA run
                                                          # beside it, a refused run, the Slack burst against it,
                                                          # `flywheel demo`, DPO MFU
    python -m bench.gpu training,serving ...              # several sessions, one after another

`M` is built first if missing (bench.build_model). Each phase writes its JSON into DIR as soon as it ends;
a phase that would not finish before --deadline-s is skipped and said so.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

from bench import serving as serving_bench
from serving.engine import is_ready
from serving.testing import free_port, random_lora_adapter

REPO = Path(__file__).resolve().parent.parent
QKVO = ("q_proj", "k_proj", "v_proj", "o_proj")
# A run of the size the issue asks about: QLoRA, 4 pairs of 1,024 tokens a step, gradient checkpointing.
RUN_PLAN = {"FLYWHEEL_QLORA": "true", "FLYWHEEL_BATCH_SIZE": "4", "FLYWHEEL_MAX_LENGTH": "1024"}


class Session:
    """Phases against a deadline, each one's result saved into `out` when it ends."""

    def __init__(self, out: Path, deadline_s: float):
        self.out, self.deadline = out, time.monotonic() + deadline_s
        self.out.mkdir(parents=True, exist_ok=True)
        self.summary: dict = {"phases": {}}

    def phase(self, name: str, needs_s: float, work):
        left = self.deadline - time.monotonic()
        if left < needs_s:
            self.summary["phases"][name] = f"skipped: {left:.0f} s left, needs about {needs_s:.0f}"
            print(f"== {name}: skipped ({left:.0f} s left)", flush=True)
            return None
        print(f"== {name} ({left:.0f} s left)", flush=True)
        started = time.monotonic()
        try:
            result = work()
            self.summary["phases"][name] = f"done in {time.monotonic() - started:.0f} s"
        except Exception as exc:  # record it and go on: the other phases' figures still count
            result = {"error": f"{type(exc).__name__}: {exc}"}
            self.summary["phases"][name] = f"failed after {time.monotonic() - started:.0f} s: {exc}"
        self.summary[name] = result
        self.save()
        return result

    def save(self) -> None:
        (self.out / "summary.json").write_text(json.dumps(self.summary, indent=2, default=str))


def serving(session: Session, model_dir: Path, args) -> None:
    argv = ["--servers", args.servers, "--model-dir", str(model_dir), "--skip-transformers", "--concurrency", "1,64",
            "--single-prompts", "4", "--lora-concurrency", "1,64", "--lora-rounds", "5", "--lora-prompts", "128",
            "--bandwidth-tbs", str(args.bandwidth_tbs), "--out", str(session.out / "serving.json"),
            "--deadline-s", str(session.deadline - time.monotonic()), "--server-s", "200"]
    argv += (["--prefix-caching"] if args.prefix_caching else []) + ["--lora-servers", args.lora_servers]
    session.phase("serving", 200, lambda: {"servers": [s["label"] for s in serving_bench.main(argv)["servers"]]})


def start_serve(home: Path, log: Path) -> tuple[subprocess.Popen, str, float]:
    """`flywheel serve` as `flywheel up` starts it; returns the process, its URL and seconds to ready."""
    from flywheel.settings import load_settings

    url = load_settings().vllm_url
    started = time.monotonic()
    with log.open("ab") as handle:
        process = subprocess.Popen([sys.executable, "-m", "flywheel", "serve"], stdout=handle, stderr=subprocess.STDOUT)
    while not is_ready(url):
        if process.poll() is not None or time.monotonic() - started > 600:
            raise RuntimeError(f"flywheel serve did not become ready; see {log}")
        time.sleep(1)
    return process, url, time.monotonic() - started


def loop(session: Session, model_dir: Path, args) -> None:
    from bench.gpu_sharing import refused_run, run_beside_vllm
    from bench.hot_swap import hot_swap, register
    from flywheel.settings import load_settings
    from serving.adapters import sync_adapters
    from storage.db import upgrade

    home = args.home
    os.environ.update(FLYWHEEL_HOME=str(home), FLYWHEEL_BASE_MODEL_PATH=str(model_dir), FLYWHEEL_VLLM_PORT=str(free_port()),
                      FLYWHEEL_MAX_ANSWER_TOKENS="128", **RUN_PLAN)
    settings = load_settings()
    upgrade(settings.database_url)
    serve, url, startup_s = start_serve(home, session.out / "serve.log")
    session.summary["flywheel serve"] = {"startup_s": startup_s, "url": url}
    try:
        adapters = [random_lora_adapter(model_dir, home / "bench-adapters" / name, rank=16, seed=seed,
                                        target_modules=QKVO) for seed, name in enumerate("ab", start=1)]
        old = register(settings, adapters[0], model_dir, promote=True)
        new = register(settings, adapters[1], model_dir, promote=False)
        sync_adapters(settings)
        if "hot swap" not in args.skip:
            session.phase("hot swap", 30, lambda: hot_swap(settings, old, new))
        for micro_batch in [] if "run beside" in args.skip else args.run_micro_batches:  # 4 pairs a step
            plan = {"qlora": True, "batch_size": micro_batch, "gradient_accumulation_steps": 4 // micro_batch,
                    "max_length": 1024, "max_steps": args.run_steps}
            session.phase(f"run beside vLLM, micro-batch {micro_batch}", 150,
                          lambda plan=plan: run_beside_vllm(settings, url, pairs=64, overrides=plan))
        if "refused run" not in args.skip:
            too_big = {"qlora": False, "batch_size": 64, "max_length": 8192}
            session.phase("refused run", 30, lambda: refused_run(settings, too_big))
        if "slack load" not in args.skip:
            session.phase("slack load", 120, lambda: slack_load(url, session, args.slack_users, args.slack_load_s))
    finally:
        serve.send_signal(signal.SIGTERM)
        session.summary["flywheel serve"]["exit_code"] = serve.wait(60)
        session.save()
    if "demo" not in args.skip:
        session.phase("demo", 150, lambda: demo(model_dir, args.home / "demo", session.out / "demo.txt"))
    if "training" not in args.skip:
        training_session(session, model_dir, args)


def slack_load(url: str, session: Session, users: str, budget_s: float) -> dict:
    """bench.slack_load against this vLLM (the bot asks it like any Slack question; 64 answers at once, the
    server's sequences), each number of `users` over HTTP and Socket Mode, one channel each; its JSON is
    rewritten after every run, so what finishes within `budget_s` is kept."""
    target = session.out / "slack-load.json"
    command = [sys.executable, "-m", "bench.slack_load", "--users", users, "--mode", "http,socket", "--model", "vllm",
               "--vllm-url", url, "--capacity", "64", "--channels", "300", "--out", str(target)]
    try:
        subprocess.run(command, cwd=REPO, timeout=min(budget_s, max(session.deadline - time.monotonic() - 20, 30)))
    except subprocess.TimeoutExpired:
        pass
    return json.loads(target.read_text()) if target.exists() else {"error": "no run finished"}


def demo(model_dir: Path, home: Path, transcript: Path) -> dict:
    env = {**os.environ, "COLUMNS": "160"}
    env.pop("FLYWHEEL_VLLM_URL", None)
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "flywheel", "demo", "--base-model", str(model_dir), "--home", str(home)],
                          env=env, capture_output=True, text=True)
    transcript.write_text(done.stdout + done.stderr)
    timing = next((line for line in (done.stdout + done.stderr).splitlines() if line.startswith("time:")), None)
    return {"exit_code": done.returncode, "wall_s": time.monotonic() - started, "timings": timing}


def training(model_dir: Path, out: Path, variants: str) -> dict:
    """Tokens/s, MFU and peak memory per variant, each in a fresh process; the held-out evaluation is
    measured on the real path (the run beside vLLM), so it is left out here."""
    target = out / "training.json"
    subprocess.run([sys.executable, "-m", "bench.training", "--model-dir", str(model_dir), "--fixed-length",
                    "--max-length", "1024", "--batch-size", "4", "--pairs", "64", "--max-steps", "10", "--skip-eval",
                    "--variants", variants, "--out", str(target)], cwd=REPO)
    return json.loads(target.read_text()) if target.exists() else {"error": "no results"}


def training_session(session: Session, model_dir: Path, args) -> None:
    session.phase("training", 150, lambda: training(model_dir, session.out, args.training_variants))


SESSIONS = {"training": training_session, "serving": serving, "loop": loop}


def build_model(tokenizer: Path, model_dir: Path) -> dict:
    """In a process of its own: built in this one, the weights' CUDA memory stayed reserved (15 GiB) and the
    vLLM started next refused to start for want of its share."""
    subprocess.run([sys.executable, "-m", "bench.build_model", "--tokenizer", str(tokenizer), "--out", str(model_dir)],
                   cwd=REPO, check=True)
    return {"path": str(model_dir)}


def collect_logs(out: Path, *folders: Path) -> None:
    """The logs of vLLM, runs and the demo in one archive (the device returns at most 8 files)."""
    with tarfile.open(out / "logs.tar.gz", "w:gz") as archive:
        for folder in folders:
            for log in folder.rglob("*.log"):
                archive.add(log, arcname=str(log.relative_to(folder.parent)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sessions", help="comma-separated, run in this order: training, serving, loop")
    parser.add_argument("--model-dir", type=Path, required=True)
    parser.add_argument("--tokenizer", type=Path, default=REPO / "var" / "models" / "SmolLM2-135M-Instruct")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--home", type=Path, default=Path("/tmp/flywheel-gpu"))
    parser.add_argument("--deadline-s", type=float, default=560)
    parser.add_argument("--bandwidth-tbs", type=float, default=4.8, help="H200 HBM3e (datasheet)")
    parser.add_argument("--run-steps", type=int, default=10)
    parser.add_argument("--servers", default="bf16,fp8,ngram", help="bench.serving configurations (serving session)")
    parser.add_argument("--skip", default="", help="comma-separated phases of the loop session to leave out: "
                        "hot swap, run beside, refused run, slack load, demo, training")
    parser.add_argument("--run-micro-batches", type=lambda v: [int(x) for x in v.split(",")], default=[4],
                        help="loop session: one QLoRA run beside vLLM per micro-batch size (4 pairs a step each)")
    parser.add_argument("--prefix-caching", action=argparse.BooleanOptionalAction, default=True,
                        help="serving session: TTFT with the prefix cache used vs bypassed")
    parser.add_argument("--slack-load-s", type=float, default=200, help="loop session: seconds for the Slack burst")
    parser.add_argument("--slack-users", default="100,300", help="loop session: people at once in the Slack burst")
    parser.add_argument("--lora-servers", default="all", help="serving session: the servers that measure LoRA overhead")
    parser.add_argument("--training-variants", default="lora,qlora,lora-liger", help="bench.training variants")
    args = parser.parse_args()
    session = Session(args.out, args.deadline_s)
    session.phase("build model", 0, lambda: build_model(args.tokenizer, args.model_dir))
    try:
        for name in args.sessions.split(","):
            SESSIONS[name](session, args.model_dir, args)
    finally:
        collect_logs(args.out, args.home, args.out)
        session.save()


if __name__ == "__main__":
    main()
