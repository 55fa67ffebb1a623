"""Serving benchmark: vLLM against Hugging Face transformers `generate`, same model, same hardware, same prompts;
and, for GPU deployments, vLLM configurations side by side in one run.

    python -m bench.serving --out bench-serving.json            # starts its own vLLM, runs everything
    python -m bench.serving --vllm-url http://127.0.0.1:8000 ...  # or use a running one
    python -m bench.serving --servers bf16,fp8,ngram --skip-transformers --lora-concurrency 1,64 \\
        --prefix-caching --bandwidth-tbs 4.8 --model-dir /tmp/models/llama-8b-shape   # one GPU table

For each concurrency level it sends the same prompts (fixed output length: EOS is ignored) to vLLM
(`concurrency` requests in flight) and to transformers (`generate` in batches of `concurrency`), and
reports output tokens/s of both and their ratio, vLLM's time to first token and inter-token latency
percentiles, and vLLM's throughput with a LoRA adapter vs the base model in alternating rounds.
With --servers, each named configuration (SERVERS) gets its own vLLM, started and stopped in turn.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shlex
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import openai

from bench.prompts import LONG_SYSTEM_PROMPT, chat_prompts
from flywheel.settings import load_settings
from serving.adapters import load_adapter
from serving.base_model import ensure_base_model
from serving.engine import BASE_MODEL_NAME, VLLMServer, has_cuda
from serving.gpu_memory import ModelShape
from serving.testing import free_port, random_lora_adapter

ADAPTER_NAME = "bench-lora"
NGRAM = {"method": "ngram", "num_speculative_tokens": 4, "prompt_lookup_min": 2, "prompt_lookup_max": 4}
# Named vLLM configurations (settings overrides), compared side by side with --servers.
SERVERS = {
    "as-configured": {},
    "bf16": {"vllm_quantization": ""},
    "fp8": {"vllm_quantization": "fp8"},
    "ngram": {"vllm_quantization": "", "vllm_extra_args": f"--speculative-config {shlex.quote(json.dumps(NGRAM))}"},
}
SPEC_COUNTERS = ("vllm:spec_decode_num_draft_tokens_total", "vllm:spec_decode_num_accepted_tokens_total")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=64, help="Number of chat prompts (at least 64).")
    parser.add_argument("--single-prompts", type=int, default=8, help="Prompts at concurrency 1 (they run one by one).")
    parser.add_argument("--max-tokens", type=int, default=128, help="Output tokens per prompt (EOS ignored).")
    parser.add_argument("--concurrency", default="1,8,32,64", help="Comma-separated concurrency levels.")
    parser.add_argument("--model-dir", type=Path, help="Base model folder (default: the prepared bundled model).")
    parser.add_argument("--vllm-url", help="A running vLLM serving the model as 'base' (default: start one).")
    parser.add_argument("--servers", default="as-configured", help=f"Comma-separated vLLM configurations of {sorted(SERVERS)}.")
    parser.add_argument("--adapter", type=Path, help="LoRA adapter for the overhead ratio (default: a random r=16).")
    parser.add_argument("--adapter-name", help="With --vllm-url: an adapter that server already serves (nothing is loaded).")
    parser.add_argument("--lora-prompts", type=int, default=256, help="Prompts per round of the LoRA overhead ratio.")
    parser.add_argument("--lora-rounds", type=int, default=5, help="Alternating LoRA/base rounds (medians compared).")
    parser.add_argument("--lora-concurrency", default="", help="Concurrency levels of the LoRA ratio (default: the highest level).")
    parser.add_argument("--lora-servers", default="all", help="Comma-separated --servers that measure the LoRA overhead.")
    parser.add_argument("--prefix-caching", action="store_true", help="TTFT with the prefix cache used vs bypassed.")
    parser.add_argument("--bandwidth-tbs", type=float, help="GPU memory bandwidth (TB/s): report decode against the weight-streaming limit.")
    parser.add_argument("--skip-transformers", action="store_true", help="Measure vLLM only.")
    parser.add_argument("--deadline-s", type=float, help="Start no further server after this many seconds, minus --server-s.")
    parser.add_argument("--server-s", type=float, default=240, help="Seconds one server takes to start and be measured.")
    parser.add_argument("--out", type=Path, default=Path("bench-serving.json"), help="Where to write the JSON results.")
    return parser.parse_args(argv)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


async def _stream_one(client: openai.AsyncOpenAI, model: str, messages, max_tokens: int, extra: dict) -> dict:
    started = time.perf_counter()
    arrivals, tokens = [], 0
    stream = await client.chat.completions.create(
        model=model, messages=messages, max_tokens=max_tokens, temperature=0.0, stream=True,
        stream_options={"include_usage": True}, extra_body={"ignore_eos": True, **extra},
    )
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            arrivals.append(time.perf_counter())
        if chunk.usage:
            tokens = chunk.usage.completion_tokens
    gaps = [later - earlier for earlier, later in zip(arrivals, arrivals[1:])]
    return {"ttft": arrivals[0] - started if arrivals else float("nan"), "gaps": gaps, "tokens": tokens}


async def _complete_one(client: openai.AsyncOpenAI, model: str, messages, max_tokens: int) -> int:
    response = await client.chat.completions.create(
        model=model, messages=messages, max_tokens=max_tokens, temperature=0.0, extra_body={"ignore_eos": True},
    )
    return response.usage.completion_tokens


async def _in_flight(concurrency: int, request, prompts) -> list:
    """Send every prompt with at most `concurrency` requests in flight."""
    gate = asyncio.Semaphore(concurrency)

    async def one(messages):
        async with gate:
            return await request(messages)

    return await asyncio.gather(*(one(messages) for messages in prompts))


def latency_summary(streamed: list[dict]) -> dict:
    ttft = [r["ttft"] * 1000 for r in streamed]
    gaps = [g * 1000 for r in streamed for g in r["gaps"]]
    return {"ttft_ms": {f"p{q}": percentile(ttft, q) for q in (50, 90, 99)},
            "itl_ms": {f"p{q}": percentile(gaps, q) for q in (50, 90, 99)}}


async def _vllm_level(url: str, model: str, prompts, max_tokens: int, concurrency: int, latency: bool,
                      throughput: bool = True, extra: dict | None = None) -> dict:
    client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="bench", timeout=3600, max_retries=0)
    result = {}
    # Throughput from whole answers: parsing thousands of stream chunks a second in this one Python
    # client would make the client, not vLLM, the bottleneck. Latency comes from a streamed pass.
    if throughput:
        started = time.perf_counter()
        tokens = sum(await _in_flight(concurrency, lambda m: _complete_one(client, model, m, max_tokens), prompts))
        wall = time.perf_counter() - started
        result = {"output_tokens": tokens, "wall_s": wall, "tok_s": tokens / wall}
    if latency:
        streamed = await _in_flight(concurrency, lambda m: _stream_one(client, model, m, max_tokens, extra or {}), prompts)
        result.update(latency_summary(streamed))
    await client.close()
    return result


def vllm_level(url: str, model: str, prompts, max_tokens: int, concurrency: int, latency: bool = False, *,
               throughput: bool = True, extra: dict | None = None) -> dict:
    return asyncio.run(_vllm_level(url, model, prompts, max_tokens, concurrency, latency, throughput, extra))


def transformers_level(model, tokenizer, prompts, max_tokens: int, batch: int) -> dict:
    """Batched greedy `generate`, `batch` prompts at a time, exactly `max_tokens` new tokens each."""
    import torch

    tokens, started = 0, time.perf_counter()
    for start in range(0, len(prompts), batch):
        texts = [tokenizer.apply_chat_template(m, tokenize=False, add_generation_prompt=True)
                 for m in prompts[start:start + batch]]
        inputs = tokenizer(texts, return_tensors="pt", padding=True).to(model.device)
        with torch.inference_mode():
            output = model.generate(**inputs, max_new_tokens=max_tokens, min_new_tokens=max_tokens,
                                    do_sample=False, pad_token_id=tokenizer.pad_token_id)
        tokens += (output.shape[1] - inputs["input_ids"].shape[1]) * output.shape[0]
    wall = time.perf_counter() - started
    return {"output_tokens": tokens, "wall_s": wall, "tok_s": tokens / wall}


def load_transformers(model_dir: Path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cuda = torch.cuda.is_available()
    # Each side at its best on the hardware: bf16 on a GPU, float32 on a CPU without native bf16.
    dtype = torch.bfloat16 if cuda else torch.float32
    tokenizer = AutoTokenizer.from_pretrained(model_dir, padding_side="left")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype).to("cuda" if cuda else "cpu").eval()
    return model, tokenizer, str(dtype).removeprefix("torch.")


def with_system(prompts, system_prompt: str):
    return [[{"role": "system", "content": system_prompt}, *messages] for messages in prompts]


def every_10_s(show):
    """A progress callback that passes on at most one message per 10 s."""
    last = [0.0]

    def progress(message: str) -> None:
        if time.monotonic() - last[0] >= 10:
            last[0] = time.monotonic()
            show(message, flush=True)

    return progress


def hardware() -> str:
    try:
        import torch

        if torch.cuda.is_available():
            return f"{torch.cuda.get_device_name(0)} (CUDA), {os.cpu_count()} CPU cores"
    except ImportError:
        pass
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    cpu = next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), platform.processor())
    flags = set(next((line.split(":", 1)[1].split() for line in cpuinfo if line.startswith("flags")), []))
    # The CPU build's matmuls differ by these: some of these machines have AVX-512 with BF16 (or AMX), others not.
    simd = [flag for flag in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if flag in flags] or ["none of avx2/avx512"]
    return f"CPU only: {cpu}, {os.cpu_count()} cores, {' '.join(simd)}"


def weight_streaming(model_dir: Path, quantization: str, decode_tok_s: float, bandwidth_tbs: float) -> dict:
    """Batch-1 decode reads every layer's weights and the LM head once per token: bandwidth / those bytes is
    the fastest it can go. fp8 stores the linear layers in one byte; the LM head stays bf16 in vLLM."""
    shape = ModelShape.read(model_dir)
    per_token = shape.linear_params * (1 if quantization == "fp8" else 2) + shape.vocab * shape.hidden * 2
    limit = bandwidth_tbs * 1e12 / per_token
    return {"bytes_per_token": per_token, "bandwidth_tbs": bandwidth_tbs, "limit_tok_s": limit,
            "decode_tok_s": decode_tok_s, "share": decode_tok_s / limit}


def spec_counters(url: str) -> dict[str, float]:
    """vLLM's speculative-decoding counters from /metrics (empty without speculation)."""
    text = httpx.get(f"{url}/metrics", timeout=10).text
    values = {}
    for line in text.splitlines():
        name = line.split("{")[0].split(" ")[0]
        if name in SPEC_COUNTERS:
            values[name] = values.get(name, 0.0) + float(line.rsplit(" ", 1)[1])
    return values


def lora_overhead(url: str, lora_name: str, prompts, max_tokens: int, concurrency: int, rounds: int) -> dict:
    """Adapter vs base on the same server in alternating rounds, medians of each: one pass lasts a second or
    two on a GPU, too short to compare alone."""
    print(f"LoRA vs base, concurrency {concurrency}, {len(prompts)} prompts, {rounds} rounds…", flush=True)
    vllm_level(url, lora_name, prompts[:4], 4, 4)  # warm-up
    lora, base = [], []
    for _ in range(rounds):
        lora.append(vllm_level(url, lora_name, prompts, max_tokens, concurrency)["tok_s"])
        base.append(vllm_level(url, BASE_MODEL_NAME, prompts, max_tokens, concurrency)["tok_s"])
    lora_tok_s, base_tok_s = statistics.median(lora), statistics.median(base)
    return {"concurrency": concurrency, "prompts": len(prompts), "rounds": {"lora": lora, "base": base},
            "lora_tok_s": lora_tok_s, "base_tok_s": base_tok_s, "ratio": lora_tok_s / base_tok_s,
            "lora_always_slower": max(lora) < min(base)}


def prefix_caching(url: str, system_prompts: dict[str, str], max_tokens: int, levels: dict[int, int]) -> list[dict]:
    """TTFT with the shared system prompt served from vLLM's prefix cache vs recomputed for every request
    (a distinct `cache_salt` per request keeps it from matching any cached block)."""
    rows = []
    for label, system in system_prompts.items():
        for concurrency, count in levels.items():
            prompts = with_system(chat_prompts(count), system)
            print(f"prefix caching: {label} system prompt, concurrency {concurrency}…", flush=True)
            row = {"system_prompt": label, "concurrency": concurrency, "prompts": count}
            for mode in ("cached", "bypassed"):
                vllm_level(url, BASE_MODEL_NAME, prompts[:2], 2, 2)  # puts the shared prefix in the cache
                salts = iter(uuid.uuid4().hex for _ in prompts) if mode == "bypassed" else None
                row[mode] = asyncio.run(_salted_pass(url, prompts, max_tokens, concurrency, salts))
            rows.append(row)
    return rows


async def _salted_pass(url: str, prompts, max_tokens: int, concurrency: int, salts) -> dict:
    client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="bench", timeout=3600, max_retries=0)
    streamed = await _in_flight(concurrency, lambda m: _stream_one(
        client, BASE_MODEL_NAME, m, max_tokens, {"cache_salt": next(salts)} if salts else {}), prompts)
    await client.close()
    return latency_summary(streamed)


def measure_server(url: str, settings, model_dir: Path, lora_name: str, args: argparse.Namespace, report: dict,
                   with_lora: bool = True) -> None:
    """Every vLLM figure of one server into `report`, as each is measured (a server that fails part-way keeps
    the figures before): levels, LoRA overhead, prefix caching, weight streaming."""
    prompts = with_system(chat_prompts(args.prompts), settings.system_prompt)
    single = prompts[:args.single_prompts]
    levels = [int(c) for c in args.concurrency.split(",")]
    vllm_level(url, BASE_MODEL_NAME, prompts[:4], 4, 4)  # warm-up, not measured
    spec_before = spec_counters(url)
    report.update(quantization=settings.vllm_quantization or "none", extra_args=settings.vllm_extra_args, levels=[],
                  lora=[])
    for level in levels:
        print(f"vLLM, concurrency {level}…", flush=True)
        row = vllm_level(url, BASE_MODEL_NAME, single if level == 1 else prompts, args.max_tokens, level, latency=True)
        report["levels"].append({"concurrency": level, "vllm": row})
    spec_after = spec_counters(url)
    if spec_after:
        drafted, accepted = (spec_after[n] - spec_before.get(n, 0.0) for n in SPEC_COUNTERS)
        report["speculation"] = {"drafted": drafted, "accepted": accepted, "acceptance": accepted / max(drafted, 1)}
    single_row = next((r["vllm"] for r in report["levels"] if r["concurrency"] == 1), None)
    if args.bandwidth_tbs and single_row:
        decode = 1000 / single_row["itl_ms"]["p50"]
        report["weight_streaming"] = weight_streaming(model_dir, settings.vllm_quantization, decode, args.bandwidth_tbs)
    lora_levels = [int(c) for c in (args.lora_concurrency or str(max(levels))).split(",")] if with_lora else []
    for c in lora_levels:
        lora_prompts = with_system(chat_prompts(args.lora_prompts), settings.system_prompt) if c > 1 else single[:4]
        report["lora"].append(lora_overhead(url, lora_name, lora_prompts, args.max_tokens, c, args.lora_rounds))
    if args.prefix_caching:
        systems = {"default": settings.system_prompt, "long": LONG_SYSTEM_PROMPT}
        report["prefix_caching"] = prefix_caching(url, systems, args.max_tokens, {1: 4, 64: 64})


def markdown(report: dict) -> str:
    lines = [f"Hardware: {report['hardware']}; model {report['model']}; {report['prompts']} prompts x "
             f"{report['max_tokens']} output tokens; transformers dtype {report.get('transformers_dtype', '-')}"]
    for server in report["servers"]:
        lines += ["", f"**{server['label']}** (quantization {server.get('quantization', '-')})", "",
                  "| concurrency | vLLM tok/s | transformers tok/s | vLLM / transformers | TTFT p50 / p90 / p99 ms "
                  "| ITL p50 / p90 / p99 ms |", "|---:|---:|---:|---:|---|---|"]
        if "error" in server:
            lines.append(f"failed: {server['error']}")
        for row in server.get("levels", []):
            v, t = row["vllm"], row.get("transformers")
            ttft, itl = v["ttft_ms"], v["itl_ms"]
            hf = f"{t['tok_s']:.1f} | {row['ratio']:.2f}x" if t else "- | -"
            lines.append(f"| {row['concurrency']} | {v['tok_s']:.1f} | {hf} "
                         f"| {ttft['p50']:.0f} / {ttft['p90']:.0f} / {ttft['p99']:.0f} "
                         f"| {itl['p50']:.1f} / {itl['p90']:.1f} / {itl['p99']:.1f} |")
        for lora in server.get("lora", []):
            lines.append(f"LoRA at concurrency {lora['concurrency']}, {lora['prompts']} prompts, median of "
                         f"{len(lora['rounds']['lora'])} rounds: {lora['lora_tok_s']:.1f} vs base {lora['base_tok_s']:.1f} "
                         f"tok/s (overhead {100 * (1 - lora['ratio']):.0f} %)")
        if "weight_streaming" in server:
            w = server["weight_streaming"]
            lines.append(f"Batch-1 decode {w['decode_tok_s']:.0f} tok/s = {100 * w['share']:.0f} % of the weight-streaming "
                         f"limit ({w['limit_tok_s']:.0f} tok/s at {w['bandwidth_tbs']} TB/s)")
        if "speculation" in server:
            lines.append(f"n-gram speculation: {100 * server['speculation']['acceptance']:.0f} % of drafted tokens accepted")
        for row in server.get("prefix_caching", []):
            cached, bypassed = row["cached"]["ttft_ms"], row["bypassed"]["ttft_ms"]
            lines.append(f"Prefix cache ({row['system_prompt']} system prompt, concurrency {row['concurrency']}): TTFT p50 "
                         f"{cached['p50']:.0f} vs {bypassed['p50']:.0f} ms bypassed, p99 {cached['p99']:.0f} vs {bypassed['p99']:.0f}")
    return "\n".join(lines)


def save(report: dict, out: Path) -> None:
    """Written after every phase, so a long run that is cut short still leaves what it measured."""
    out.write_text(json.dumps(report, indent=2))


def add_transformers(report: dict, model_dir: Path, prompts, args: argparse.Namespace) -> None:
    model, tokenizer, report["transformers_dtype"] = load_transformers(model_dir)
    for row in report["servers"][0]["levels"]:
        print(f"transformers, batch {row['concurrency']}…", flush=True)
        batch = prompts[:args.single_prompts] if row["concurrency"] == 1 else prompts
        row["transformers"] = transformers_level(model, tokenizer, batch, args.max_tokens, row["concurrency"])
        row["ratio"] = row["vllm"]["tok_s"] / row["transformers"]["tok_s"]
        save(report, args.out)


def server_settings(base, label: str, url: str | None):
    """The base settings with configuration `label`, on `url` or a free port of this machine."""
    port = free_port()
    return base.model_copy(update={**SERVERS[label], "vllm_port": port, "stream_chunk_tokens": 1,  # every token timed
                                   "vllm_url": url or f"http://{base.vllm_host}:{port}"})


def start_server(settings, model_dir: Path, log_path: Path) -> tuple[VLLMServer, dict]:
    """A started vLLM and how it started: seconds to ready, its GPU memory plan."""
    server = VLLMServer(settings, model_dir, log_path=log_path)
    print(f"starting vLLM (log {server.log_path})…", flush=True)
    started = time.monotonic()
    server.start()
    server.wait_ready(every_10_s(print))
    return server, {"startup_s": time.monotonic() - started, "gpu_memory": server.gpu_plan and server.gpu_plan.note}


def run_servers(args: argparse.Namespace, report: dict, base_settings, model_dir: Path, adapter: Path) -> None:
    """Each configuration on its own server (or the running one), measured and saved in turn."""
    deadline = time.monotonic() + (args.deadline_s or float("inf"))
    for label in args.servers.split(","):
        if time.monotonic() + args.server_s > deadline:
            report.setdefault("skipped", []).append(label)
            continue
        settings = server_settings(base_settings, label, args.vllm_url)
        server, row = (None, {}) if args.vllm_url else start_server(
            settings, model_dir, args.out.with_suffix(f".{label}.vllm.log"))
        row["label"] = label
        with_lora = label in args.lora_servers.split(",") or args.lora_servers == "all"
        try:
            if not args.adapter_name and with_lora:
                load_adapter(settings, ADAPTER_NAME, adapter)
            measure_server(settings.vllm_url, settings, model_dir, args.adapter_name or ADAPTER_NAME, args, row, with_lora)
        except Exception as exc:  # noqa: BLE001 - a configuration that breaks is a finding; the next one still runs
            row["error"] = f"{type(exc).__name__}: {exc}"
            print(f"{label}: {row['error']}", flush=True)
        finally:
            if server is not None:
                server.stop()
        report["servers"].append(row)
        save(report, args.out)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.prompts < 64:
        raise SystemExit("--prompts must be at least 64")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    with tempfile.TemporaryDirectory() as tmp:
        settings = load_settings(**({"base_model_path": args.model_dir} if args.model_dir else {}))
        model_dir = ensure_base_model(settings)
        adapter = args.adapter or random_lora_adapter(model_dir, Path(tmp) / "adapter", rank=16,
                                                      target_modules=tuple(settings.target_modules))
        report = {"hardware": hardware(), "model": str(model_dir), "prompts": args.prompts, "max_tokens": args.max_tokens,
                  "vllm_build": "CUDA" if has_cuda() else "CPU", "servers": [],
                  # VLLM_PLUGINS="" turns off serving/cpu_lora.py (vLLM's own CPU LoRA ops): the baseline of that change
                  "vllm_plugins": os.environ.get("VLLM_PLUGINS", "all")}
        run_servers(args, report, settings, model_dir, adapter)
        if not args.skip_transformers:
            add_transformers(report, model_dir, with_system(chat_prompts(args.prompts), settings.system_prompt), args)
    save(report, args.out)
    print(markdown(report))
    print(f"\nJSON written to {args.out}")
    return report


if __name__ == "__main__":
    main()
