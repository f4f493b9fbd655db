"""Memory and time budgets."""

from __future__ import annotations

import pytest

from lekutils.engine.models.tiny import byte_model
from lekutils.train.budget import (
    CURRICULUM_MEMORY_GB,
    GEMMA3_27B,
    PhasePlan,
    architecture_config,
    budget_table,
    lora_parameter_count,
    memory_budget,
    parameter_count,
    time_budget,
)


def test_gemma3_27b_budget_matches_curriculum_scale() -> None:
    assert parameter_count(GEMMA3_27B) == pytest.approx(27.0e9, rel=0.01)
    b = memory_budget(GEMMA3_27B, bits=4, seq_len=4096, rank=16, num_layers=32, name="gemma3-27b")
    assert b.weights_gb == pytest.approx(27.008e9 * (0.5 + 4 / 64) / 1e9, rel=1e-3)
    assert b.kv_cache_gb == pytest.approx(2 * 62 * 16 * 128 * 4096 * 2 / 1e9)
    assert b.optimizer_gb == pytest.approx(2 * b.lora_gb) and b.gradients_gb == pytest.approx(b.lora_gb)
    assert 0.75 * CURRICULUM_MEMORY_GB < b.total_gb < 1.25 * CURRICULUM_MEMORY_GB  # "about 20 GB"
    assert b.total_gb < 96
    nocp = memory_budget(GEMMA3_27B, grad_checkpoint=False)
    assert nocp.activations_gb > 10 * b.activations_gb
    table = budget_table([b])
    assert table.loc["total", "gemma3-27b"] == pytest.approx(b.total_gb, abs=1e-3)


def test_lora_count_matches_mlx_lm_layers() -> None:
    from lekutils.train.adapters import apply_lora, count_params

    model = byte_model(layers=2, hidden=32)
    arch = architecture_config(model)
    assert arch["hidden_size"] == 32 and arch["num_hidden_layers"] == 2
    model = apply_lora(model, 2, {"rank": 4, "scale": 8.0, "dropout": 0.0})
    assert lora_parameter_count(arch, rank=4, num_layers=2) == count_params(model)[0]
    assert lora_parameter_count(arch, rank=4, num_layers=5) == count_params(model)[0]  # capped


def test_time_budget_hours() -> None:
    plan = [PhasePlan(0, prompts=100, samples_per_prompt=8, gen_tokens_per_sample=450, train_iters=50,
                      train_tokens_per_iter=720),
            {"phase": 1, "prompts": 10, "samples_per_prompt": 1, "gen_tokens_per_sample": 360, "train_iters": 10,
             "train_tokens_per_iter": 360}]
    df = time_budget(plan, gen_tokens_per_s=100.0, train_tokens_per_s=36.0)
    assert df.loc[0, "data_generation_h"] == pytest.approx(100 * 8 * 450 / 100 / 3600)
    assert df.loc[1, "training_h"] == pytest.approx(10 * 360 / 36 / 3600)
    assert df.iloc[-1]["phase"] == "total" and df.iloc[-1]["curriculum_training_h"] == "18-24"
    slow = time_budget(plan, gen_tokens_per_s=100.0, train_tokens_per_s=36.0, throughput_scale=200)
    assert slow.iloc[-1]["training_h"] == pytest.approx(200 * df.iloc[-1]["training_h"])


def test_plan_from_banks_uses_the_real_bank_sizes(repo_root) -> None:
    import yaml

    from lekutils.data.compose import bank_sizes
    from lekutils.train.budget import plan_from_banks

    table = yaml.safe_load((repo_root / "params" / "gemma3-27b" / "curriculum.yaml").read_text())
    assert table["defaults"]["train"]["budget_from_banks"] is True
    plan = table["defaults"]["train"]["curriculum_plan"]
    sizes = bank_sizes()
    real = plan_from_banks(plan)
    assert [p.prompts for p in real] == [r["user_turns"] for r in sizes]
    assert real[3].prompts == 300 + 30 * 3 + 30 * 4  # single-turn + the turns of 60 conversations
    assert [p.samples_per_prompt for p in real] == [p["samples_per_prompt"] for p in plan]
    # a phase missing from the sizes keeps its planned prompts
    assert plan_from_banks([PhasePlan(7, 5, 1, 10.0, 1, 10.0)], sizes)[0].prompts == 5
    df = time_budget(real, gen_tokens_per_s=100.0, train_tokens_per_s=100.0)
    assert df.loc[3, "generated_tokens"] == real[3].prompts * plan[3]["samples_per_prompt"] * plan[3][
        "gen_tokens_per_sample"]
