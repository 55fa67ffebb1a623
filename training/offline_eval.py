"""`flywheel eval`: a version's (or the base model's) preference accuracy on any pairs file."""

from __future__ import annotations

from pathlib import Path

from serving.base_model import ensure_base_model
from storage.db import get_engine, session_scope
from storage.errors import InvalidInput
from storage.pairs import parse_record
from storage.registry import get_version_by_name
from training.config import TrainConfig
from training.evaluation import BASE, score_versions
from training.served_answers import vllm_answerers
from training.snapshots import with_system_prompt


def read_pairs(path: Path, system_prompt: str) -> list[dict]:
    """Pairs in the export format (TRL conversational), validated; a bad line names its number."""
    records = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            prompt, chosen, rejected = parse_record(line)
        except InvalidInput as exc:
            raise InvalidInput(f"{path}, line {number}: {exc}") from None
        records.append({"prompt": with_system_prompt(prompt, system_prompt), "chosen": chosen, "rejected": rejected})
    if not records:
        raise InvalidInput(f"{path} has no pairs")
    return records


def evaluate_on_file(settings, version: str, pairs_path: Path) -> dict[str, float]:
    records = read_pairs(pairs_path, settings.system_prompt)
    adapter = None
    if version != BASE:
        with session_scope(get_engine(settings.database_url)) as session:
            adapter = Path(get_version_by_name(session, version).adapter_path)
    model_dir, adapters = ensure_base_model(settings), {version: adapter}
    with vllm_answerers(settings, model_dir, adapters, "eval") as served:
        return score_versions(model_dir, adapters, records, TrainConfig.from_settings(settings), served=served)[version]
