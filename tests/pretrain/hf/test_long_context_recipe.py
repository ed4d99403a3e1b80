"""docs/long-context.md's commands as written: the plan command recommends the layout the
recipe trains with; the config.json rewrite turns a (tiny random) Llama into one with Llama
3 rope scaling at 4× its context; the training command's overrides load on it with that
scaling, that length and the cp layout on 16 GPUs."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from data_pipeline.command import compose_config
from pretrain.config import load_train_config
from pretrain.hf.import_config import model_config_from_hf
from pretrain.hf.init_from import with_imported_model
from pretrain.parallel.layout import validate_layout
from pretrain.plan import PlanConfig, plan
from tests.pretrain.support.hf_models import save_tiny_model

DOC = (Path(__file__).resolve().parents[3] / "docs" / "long-context.md").read_text()


def bash_blocks() -> list[str]:
    return re.findall(r"```bash\n(.*?)```", DOC, flags=re.S)


def command(block: str, start: str) -> list[str]:
    """The arguments after ``start`` of the block's command line starting so (continuations joined)."""
    lines = block.replace("\\\n", " ").splitlines()
    line = next(line.strip() for line in lines if line.strip().startswith(start))
    return shlex.split(line[len(start) :])


def test_the_plan_command_recommends_the_recipe_s_layout(capsys: pytest.CaptureFixture) -> None:
    arguments = command(bash_blocks()[0], "python -m pretrain.plan")
    best = plan(compose_config("plan", PlanConfig, arguments))[0]
    train = command(bash_blocks()[1], "NNODES=2 NODE_RANK=0 MASTER_ADDR=node-a launch/torchrun.sh")
    assert best.memory.fits and best.layout.cp > 1
    assert set(best.overrides()) <= set(train)  # the recipe trains in the planner's layout


def test_the_recipe_extends_a_llama_s_context_and_its_training_config_loads(tmp_path: Path) -> None:
    recipe = bash_blocks()[1]
    snippet = re.search(r"<<'EOF'\n(.*?)\nEOF\n", recipe, flags=re.S).group(1)
    model = save_tiny_model(tmp_path / "llama", "llama", num_key_value_heads=4)  # kv heads divisible by tp=4
    done = subprocess.run([sys.executable, "-", str(model / "config.json")], input=snippet, text=True)
    assert done.returncode == 0
    imported = model_config_from_hf(model)
    scaling = imported.rope_scaling
    assert imported.max_seq_len == 4 * 128 and scaling.original_max_seq_len == 128
    assert (scaling.factor, scaling.low_freq_factor, scaling.high_freq_factor) == (4.0, 1.0, 4.0)

    here = {"models/llama-3-8b-32k": str(model), "train.seq_len=32768": f"train.seq_len={4 * 128}"}
    overrides = [here.get(a, a) for a in command(recipe, "NNODES=2 NODE_RANK=0 MASTER_ADDR=node-a launch/torchrun.sh")]
    overrides = [f"init_from={model}" if a.startswith("init_from=") else a for a in overrides]
    cfg = with_imported_model(load_train_config(overrides))
    assert cfg.model.rope_scaling.factor == 4.0 and cfg.train.seq_len == cfg.model.max_seq_len == 512
    assert cfg.objective.document_masking
    layout = validate_layout(cfg, 16)
    assert (layout.tp, layout.cp, layout.dp) == (4, 2, 2)
