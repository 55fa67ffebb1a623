"""LoRA adapters in the running vLLM: load, unload, and `sync_adapters` to match the registry.

vLLM keeps its own list of adapter names and paths (`/v1/models` shows each as id + root), so
the server is the source of truth for what is loaded; these functions compare before acting,
which makes every call idempotent and safe to repeat after a restart.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from flywheel.settings import Settings
from serving import metrics
from serving.errors import AdapterError, ModelUnavailable, ServingError
from storage import registry
from storage.db import get_engine, session_scope


PROBE_TIMEOUT_S = 5.0  # a status check should not wait as long as a model request may


def _request(settings: Settings, method: str, path: str, timeout_s: float | None = None, **kwargs) -> httpx.Response:
    try:
        return httpx.request(method, f"{settings.vllm_url}{path}", timeout=timeout_s or settings.request_timeout_s,
                             **kwargs)
    except httpx.HTTPError as exc:
        raise ModelUnavailable(f"vLLM at {settings.vllm_url} is unavailable: {exc}") from exc


def _model_cards(settings: Settings, timeout_s: float | None) -> list[dict]:
    response = _request(settings, "GET", "/v1/models", timeout_s)
    if response.status_code != 200:
        raise ModelUnavailable(f"vLLM /v1/models answered {response.status_code}: {response.text[:200]}")
    return response.json()["data"]


def loaded_adapters(settings: Settings, timeout_s: float | None = None) -> dict[str, str]:
    """The adapters vLLM serves now: name -> path."""
    return {card["id"]: card["root"] for card in _model_cards(settings, timeout_s) if card.get("parent")}


def served_base_model(settings: Settings, timeout_s: float | None = None) -> str | None:
    """The folder (or hub id) of the base model vLLM serves now, as it was started with it."""
    return next((card["root"] for card in _model_cards(settings, timeout_s) if not card.get("parent")), None)


def check_adapter(path: Path, max_rank: int) -> None:
    """Refuse an adapter vLLM could not load, with a message that says why."""
    config_file = path / "adapter_config.json"
    if not config_file.is_file():
        raise AdapterError(f"no PEFT adapter at {path} (adapter_config.json missing)")
    rank = json.loads(config_file.read_text()).get("r", 0)
    if rank > max_rank:
        raise AdapterError(f"adapter {path} has LoRA rank {rank}, above the server's maximum {max_rank}")


def load_adapter(settings: Settings, name: str, path: str | Path) -> bool:
    """Serve the adapter at `path` as `name`; returns False when it already was.

    A name loaded from another path is replaced in place (no moment without it). A refused
    load changes nothing on the server.
    """
    path = Path(path).resolve()
    check_adapter(path, settings.vllm_max_lora_rank)
    current = loaded_adapters(settings).get(name)
    if current == str(path):
        return False
    body = {"lora_name": name, "lora_path": str(path), "load_inplace": current is not None}
    with metrics.ADAPTER_LOAD_SECONDS.time():
        response = _request(settings, "POST", "/v1/load_lora_adapter", json=body)
    if response.status_code == 200:
        metrics.ADAPTER_LOADS.inc()
        return True
    if loaded_adapters(settings).get(name) == str(path):
        return False  # a concurrent caller loaded the same adapter first
    raise AdapterError(f"vLLM refused adapter {name!r} from {path}: {_error_message(response)}")


def unload_adapter(settings: Settings, name: str) -> bool:
    """Stop serving `name`; returns False when it was not loaded."""
    if name not in loaded_adapters(settings):
        return False
    response = _request(settings, "POST", "/v1/unload_lora_adapter", json={"lora_name": name})
    if response.status_code == 200:
        metrics.ADAPTER_UNLOADS.inc()
    if response.status_code == 200 or name not in loaded_adapters(settings):
        return response.status_code == 200
    raise AdapterError(f"vLLM refused to unload {name!r}: {_error_message(response)}")


def _error_message(response: httpx.Response) -> str:
    try:
        return response.json()["error"]["message"]
    except (ValueError, KeyError, TypeError):
        return f"HTTP {response.status_code}: {response.text[:300]}"


@dataclass
class SyncResult:
    loaded: list[str] = field(default_factory=list)
    unloaded: list[str] = field(default_factory=list)


@metrics.SYNC_FAILURES.count_exceptions()
def sync_adapters(settings: Settings) -> SyncResult:
    """Make vLLM serve exactly the registry's active and canary versions.

    New versions are loaded before old ones are unloaded; if any load fails, nothing is
    unloaded (the versions served now stay served) and AdapterError names each failure.
    """
    with session_scope(get_engine(settings.database_url)) as session:
        wanted = {version.name: version.adapter_path for version in registry.served_versions(session)}
    result, failures = SyncResult(), []
    for name, path in wanted.items():
        try:
            if load_adapter(settings, name, path):
                result.loaded.append(name)
        except AdapterError as exc:
            failures.append(str(exc))
    if failures:
        raise AdapterError("; ".join(failures) + " (nothing was unloaded)")
    for name in sorted(set(loaded_adapters(settings)) - set(wanted)):
        if unload_adapter(settings, name):
            result.unloaded.append(name)
    return result


@dataclass(frozen=True)
class SyncReport:
    """What a registry change did to the running vLLM, in words for the dashboard and the CLI alike."""

    updated: bool
    message: str
    loaded: list[str] = field(default_factory=list)
    unloaded: list[str] = field(default_factory=list)


def sync_and_report(settings: Settings) -> SyncReport:
    """Sync after a registry change. If vLLM is down the registry change stands: `flywheel serve` and
    the scheduler sync again when it is back."""
    try:
        result = sync_adapters(settings)
    except ServingError as exc:
        return SyncReport(False, f"The registry changed, but vLLM was not updated: {exc}. It picks the change up "
                                 "when `flywheel serve` or the scheduler syncs again.")
    moves = (("loaded", result.loaded), ("unloaded", result.unloaded))
    changes = [f"{verb} {', '.join(names)}" for verb, names in moves if names]
    return SyncReport(True, f"vLLM now serves the registry ({'; '.join(changes) or 'no change needed'}).",
                      result.loaded, result.unloaded)


@dataclass(frozen=True)
class ServerState:
    url: str
    adapters: dict[str, str] | None  # name -> path; None when vLLM could not be reached
    error: str | None = None

    @property
    def reachable(self) -> bool:
        return self.adapters is not None


def server_state(settings: Settings) -> ServerState:
    """Whether vLLM answers, and which adapters it has loaded; never raises for a server that is down."""
    try:
        return ServerState(settings.vllm_url, loaded_adapters(settings, PROBE_TIMEOUT_S))
    except ServingError as exc:
        return ServerState(settings.vllm_url, None, str(exc))
