"""What every staged command keeps under its output_dir's ``_work/``: the run the folder
belongs to (``run.json``) and the executor's completion markers (``done/<stage>/``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

from omegaconf import OmegaConf

from data_pipeline.io.writers import atomic_write_text


class WorkDir:
    def __init__(self, output_dir: str | Path) -> None:
        self.root = Path(output_dir)
        self.work = self.root / "_work"

    @property
    def run_file(self) -> Path:
        return self.work / "run.json"

    def markers(self, stage: str) -> Path:
        return self.work / "done" / stage

    def claim(self, config: Any, runtime_keys: Sequence[str], **identity: Any) -> None:
        """Make output_dir this run's, or refuse one that another run started (other settings
        than ``runtime_keys``, e.g. "workers" or "dedup.cluster_rows", or another ``identity``:
        inputs, tokenizer): resuming it would
        mix two runs' files."""
        settings = OmegaConf.to_container(OmegaConf.structured(config))
        for key in runtime_keys:  # "section.key" for a nested one
            *sections, name = key.split(".")
            parent = settings
            for section in sections:
                parent = parent[section]
            parent.pop(name)
        # through JSON, as stored: integer keys (n-gram sizes) become strings
        run = json.loads(json.dumps({"config": settings, **identity}))
        if not self.run_file.exists():
            self.work.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.run_file, json.dumps(run, indent=1))
            return
        previous = json.loads(self.run_file.read_text())
        if previous != run:
            changed = [changed_settings(previous.get("config", {}), run["config"])]
            changed += [f"the {key}" for key in identity if previous.get(key) != run[key]]
            raise ValueError(
                f"output_dir={self.root} holds a run with other settings ({', '.join(filter(None, changed))}); "
                "use a new output_dir, or delete this one to start over"
            )


def changed_settings(before: dict, after: dict, prefix: str = "") -> str:
    changed = []
    for key in sorted(set(before) | set(after)):
        old, new = before.get(key), after.get(key)
        if isinstance(old, dict) and isinstance(new, dict):
            inner = changed_settings(old, new, f"{prefix}{key}.")
            changed += [inner] if inner else []
        elif old != new:
            changed.append(f"{prefix}{key}: {old} -> {new}")
    return ", ".join(changed)
