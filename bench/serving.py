"""Serving benchmark: vLLM against Hugging Face transformers `generate`, same model, same hardware, same prompts.

    python -m bench.serving --out bench-serving.json            # starts its own vLLM, runs everything
    python -m bench.serving --vllm-url http://127.0.0.1:8000 ...  # or use a running one

For each concurrency level it sends the same prompts (fixed output length: EOS is ignored) to vLLM
(streaming, `concurrency` requests in flight) and to transformers (`generate` in batches of
`concurrency`), and reports output tokens/s of both and their ratio, vLLM's time to first token
and inter-token latency percentiles, and vLLM's throughput with a LoRA adapter vs the base model.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import openai

from bench.prompts import chat_prompts
from flywheel.settings import load_settings
from serving.adapters import load_adapter
from serving.base_model import ensure_base_model
from serving.engine import BASE_MODEL_NAME, VLLMServer, has_cuda
from serving.testing import free_port, random_lora_adapter

ADAPTER_NAME = "bench-lora"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=64, help="Number of chat prompts (at least 64).")
    parser.add_argument("--max-tokens", type=int, default=128, help="Output tokens per prompt (EOS ignored).")
    parser.add_argument("--concurrency", default="1,8,32,64", help="Comma-separated concurrency levels.")
    parser.add_argument("--model-dir", type=Path, help="Base model folder (default: the prepared bundled model).")
    parser.add_argument("--vllm-url", help="A running vLLM serving the model as 'base' (default: start one).")
    parser.add_argument("--adapter", type=Path, help="LoRA adapter for the overhead ratio (default: a random r=16).")
    parser.add_argument("--lora-prompts", type=int, default=256, help="Prompts per round of the LoRA overhead ratio.")
    parser.add_argument("--lora-rounds", type=int, default=3, help="Alternating LoRA/base rounds (medians compared).")
    parser.add_argument("--skip-transformers", action="store_true", help="Measure vLLM only.")
    parser.add_argument("--out", type=Path, default=Path("bench-serving.json"), help="Where to write the JSON results.")
    return parser.parse_args()


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


async def _stream_one(client: openai.AsyncOpenAI, model: str, messages, max_tokens: int) -> dict:
    started = time.perf_counter()
    arrivals, tokens = [], 0
    stream = await client.chat.completions.create(
        model=model, messages=messages, max_tokens=max_tokens, temperature=0.0, stream=True,
        stream_options={"include_usage": True}, extra_body={"ignore_eos": True},
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


async def _vllm_level(url: str, model: str, prompts, max_tokens: int, concurrency: int, latency: bool) -> dict:
    client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="bench", timeout=3600, max_retries=0)
    # Throughput from whole answers: parsing thousands of stream chunks a second in this one Python
    # client would make the client, not vLLM, the bottleneck. Latency comes from a streamed pass.
    started = time.perf_counter()
    tokens = sum(await _in_flight(concurrency, lambda m: _complete_one(client, model, m, max_tokens), prompts))
    wall = time.perf_counter() - started
    result = {"output_tokens": tokens, "wall_s": wall, "tok_s": tokens / wall}
    if latency:
        streamed = await _in_flight(concurrency, lambda m: _stream_one(client, model, m, max_tokens), prompts)
        ttft = [r["ttft"] * 1000 for r in streamed]
        gaps = [g * 1000 for r in streamed for g in r["gaps"]]
        result["ttft_ms"] = {f"p{q}": percentile(ttft, q) for q in (50, 90, 99)}
        result["itl_ms"] = {f"p{q}": percentile(gaps, q) for q in (50, 90, 99)}
    await client.close()
    return result


def vllm_level(url: str, model: str, prompts, max_tokens: int, concurrency: int, latency: bool = False) -> dict:
    return asyncio.run(_vllm_level(url, model, prompts, max_tokens, concurrency, latency))


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
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    return f"CPU only: {cpu}, {os.cpu_count()} cores"


def markdown(report: dict) -> str:
    lines = [
        f"Hardware: {report['hardware']}; model {report['model']}; {report['prompts']} prompts x "
        f"{report['max_tokens']} output tokens; transformers dtype {report.get('transformers_dtype', '-')}",
        "",
        "| concurrency | vLLM tok/s | transformers tok/s | vLLM / transformers | TTFT p50 / p90 / p99 ms "
        "| ITL p50 / p90 / p99 ms |",
        "|---:|---:|---:|---:|---|---|",
    ]
    for row in report["levels"]:
        v, t = row["vllm"], row.get("transformers")
        ttft, itl = v["ttft_ms"], v["itl_ms"]
        hf = f"{t['tok_s']:.1f} | {row['ratio']:.2f}x" if t else "- | -"
        lines.append(f"| {row['concurrency']} | {v['tok_s']:.1f} | {hf} "
                     f"| {ttft['p50']:.0f} / {ttft['p90']:.0f} / {ttft['p99']:.0f} "
                     f"| {itl['p50']:.1f} / {itl['p90']:.1f} / {itl['p99']:.1f} |")
    lora = report["lora"]
    lines += ["", f"LoRA (r={lora['rank']}) at concurrency {lora['concurrency']}, {lora['prompts']} prompts, median of "
              f"{len(lora['rounds']['lora'])} rounds: {lora['lora_tok_s']:.1f} tok/s vs base {lora['base_tok_s']:.1f} "
              f"tok/s = {lora['ratio']:.2f} (overhead {100 * (1 - lora['ratio']):.0f} %)"]
    return "\n".join(lines)


def save(report: dict, out: Path) -> None:
    """Written after every phase, so a long run that is cut short still leaves what it measured."""
    out.write_text(json.dumps(report, indent=2))


def run(args: argparse.Namespace, url: str, settings, model_dir: Path, adapter: Path) -> dict:
    prompts = with_system(chat_prompts(args.prompts), settings.system_prompt)
    levels = [int(c) for c in args.concurrency.split(",")]
    vllm_level(url, BASE_MODEL_NAME, prompts[:4], 4, 4)  # warm-up, not measured
    report = {"hardware": hardware(), "model": str(model_dir), "prompts": len(prompts),
              "max_tokens": args.max_tokens, "vllm_build": "CUDA" if has_cuda() else "CPU", "levels": []}
    for level in levels:
        print(f"vLLM, concurrency {level}…", flush=True)
        report["levels"].append({"concurrency": level, "vllm": vllm_level(url, BASE_MODEL_NAME, prompts, args.max_tokens, level, latency=True)})
        save(report, args.out)
    if not args.skip_transformers:
        model, tokenizer, report["transformers_dtype"] = load_transformers(model_dir)
        for row in report["levels"]:
            print(f"transformers, batch {row['concurrency']}…", flush=True)
            row["transformers"] = transformers_level(model, tokenizer, prompts, args.max_tokens, row["concurrency"])
            row["ratio"] = row["vllm"]["tok_s"] / row["transformers"]["tok_s"]
            save(report, args.out)
        del model
    lora_prompts = with_system(chat_prompts(args.lora_prompts), settings.system_prompt)
    report["lora"] = lora_overhead(url, settings, adapter, lora_prompts, args.max_tokens, max(levels), args.lora_rounds)
    return report


def lora_overhead(url: str, settings, adapter: Path, prompts, max_tokens: int, concurrency: int, rounds: int) -> dict:
    """Adapter vs base on the same server in alternating rounds, medians of each: one pass of a few hundred
    requests lasts about a second on a GPU, too short to compare alone."""
    print(f"LoRA vs base, concurrency {concurrency}, {len(prompts)} prompts, {rounds} rounds…", flush=True)
    load_adapter(settings, ADAPTER_NAME, adapter)
    vllm_level(url, ADAPTER_NAME, prompts[:4], 4, 4)  # warm-up
    lora, base = [], []
    for _ in range(rounds):
        lora.append(vllm_level(url, ADAPTER_NAME, prompts, max_tokens, concurrency)["tok_s"])
        base.append(vllm_level(url, BASE_MODEL_NAME, prompts, max_tokens, concurrency)["tok_s"])
    rank = json.loads((adapter / "adapter_config.json").read_text())["r"]
    lora_tok_s, base_tok_s = statistics.median(lora), statistics.median(base)
    return {"concurrency": concurrency, "prompts": len(prompts), "rank": rank, "rounds": {"lora": lora, "base": base},
            "lora_tok_s": lora_tok_s, "base_tok_s": base_tok_s, "ratio": lora_tok_s / base_tok_s}


def main() -> None:
    args = parse_args()
    if args.prompts < 64:
        raise SystemExit("--prompts must be at least 64")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    with tempfile.TemporaryDirectory() as tmp:
        settings = load_settings(vllm_url=args.vllm_url or "", vllm_port=free_port(),
                                 **({"base_model_path": args.model_dir} if args.model_dir else {}))
        model_dir = ensure_base_model(settings)
        adapter = args.adapter or random_lora_adapter(model_dir, Path(tmp) / "adapter", rank=16,
                                                      target_modules=tuple(settings.target_modules))
        server = None
        if not args.vllm_url:
            server = VLLMServer(settings, model_dir, log_path=args.out.with_suffix(".vllm.log"))
            print(f"starting vLLM (log {server.log_path})…", flush=True)
            server.start()
            server.wait_ready(every_10_s(print))
        try:
            report = run(args, settings.vllm_url, settings, model_dir, adapter)
        finally:
            if server is not None:
                server.stop()
    save(report, args.out)
    print(markdown(report))
    print(f"\nJSON written to {args.out}")


if __name__ == "__main__":
    main()
