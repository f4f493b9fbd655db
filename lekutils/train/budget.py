"""Memory and time budgets for a LoRA curriculum.

:func:`memory_budget` estimates training memory from a model config (HF/mlx-lm ``config.json``
fields): quantized weights, KV cache at a sequence length, LoRA parameters, Adam state, gradient
buffers and (with gradient checkpointing) the saved layer inputs plus one layer's recomputed
activations. :func:`time_budget` turns a planned curriculum (examples and tokens per phase) and
throughputs measured on the machine at hand into hours, beside the curriculum's own guesses.
Estimates, not measurements: allocator overhead and framework buffers come on top.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

GB = 1e9

#: Gemma 3 27B text model (google/gemma-3-27b-it ``text_config``).
GEMMA3_27B: dict[str, Any] = {
    "model_type": "gemma3_text", "hidden_size": 5376, "num_hidden_layers": 62, "intermediate_size": 21504,
    "num_attention_heads": 32, "num_key_value_heads": 16, "head_dim": 128, "vocab_size": 262208,
}
#: The curriculum's own figures (DESIGN / upstream plan).
CURRICULUM_MEMORY_GB = 20.0
CURRICULUM_MACHINE_GB = 96.0
CURRICULUM_HOURS = {"data_generation": (48.0, 72.0), "training": (18.0, 24.0)}
LORA_KEYS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def _cfg(config: Mapping[str, Any]) -> dict[str, Any]:
    c = dict(config.get("text_config") or {}, **{k: v for k, v in config.items() if k != "text_config"})
    missing = [k for k in ("hidden_size", "num_hidden_layers", "intermediate_size", "num_attention_heads",
                           "vocab_size") if k not in c]
    if missing:
        raise KeyError(f"model config lacks {', '.join(missing)}")
    if not c.get("num_key_value_heads"):
        c["num_key_value_heads"] = c["num_attention_heads"]
    if not c.get("head_dim"):
        c["head_dim"] = c["hidden_size"] // c["num_attention_heads"]
    return c


def linear_shapes(config: Mapping[str, Any]) -> dict[str, tuple[int, int]]:
    """``(in, out)`` of each linear of one transformer block."""
    c = _cfg(config)
    h, q, kv, i = c["hidden_size"], c["num_attention_heads"] * c["head_dim"], \
        c["num_key_value_heads"] * c["head_dim"], c["intermediate_size"]
    return {"q_proj": (h, q), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (q, h),
            "gate_proj": (h, i), "up_proj": (h, i), "down_proj": (i, h)}


def parameter_count(config: Mapping[str, Any]) -> int:
    """Weights of the model (linears + embedding; norms are negligible and left out)."""
    c = _cfg(config)
    per_layer = sum(a * b for a, b in linear_shapes(c).values())
    embed = c["vocab_size"] * c["hidden_size"] * (1 if c.get("tie_word_embeddings", True) else 2)
    return per_layer * c["num_hidden_layers"] + embed


def lora_parameter_count(config: Mapping[str, Any], rank: int, num_layers: int,
                         keys: Sequence[str] = LORA_KEYS) -> int:
    """LoRA parameters: ``rank * (in + out)`` per adapted linear, in the last ``num_layers`` blocks."""
    shapes = linear_shapes(config)
    return min(num_layers, _cfg(config)["num_hidden_layers"]) * sum(rank * sum(shapes[k]) for k in keys)


@dataclass
class MemoryBudget:
    """Estimated training memory in GB, item by item."""

    model: str
    params: int
    lora_params: int
    weights_gb: float
    kv_cache_gb: float
    lora_gb: float
    optimizer_gb: float
    gradients_gb: float
    activations_gb: float
    bits: float
    seq_len: int
    rank: int
    num_layers: int

    @property
    def total_gb(self) -> float:
        return (self.weights_gb + self.kv_cache_gb + self.lora_gb + self.optimizer_gb + self.gradients_gb
                + self.activations_gb)

    def rows(self) -> list[dict[str, Any]]:
        items = [("weights", self.weights_gb), ("KV cache", self.kv_cache_gb), ("LoRA parameters", self.lora_gb),
                 ("optimizer state (Adam m, v)", self.optimizer_gb), ("gradient buffers", self.gradients_gb),
                 ("activations (checkpointed)", self.activations_gb), ("total", self.total_gb)]
        return [{"model": self.model, "item": k, "GB": round(v, 3)} for k, v in items]

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "total_gb": self.total_gb}


def memory_budget(config: Mapping[str, Any], *, bits: float = 4, seq_len: int = 4096, rank: int = 16,
                  num_layers: int = 32, batch_size: int = 1, group_size: int = 64, kv_bytes: int = 2,
                  act_bytes: int = 2, lora_bytes: int = 4, grad_checkpoint: bool = True,
                  name: str = "model") -> MemoryBudget:
    """Estimate training memory for a model config (see the module docstring for the items).

    ``bits`` < 16 counts quantized weights with one scale and bias (16-bit each) per ``group_size``.
    The KV cache is 2 (K, V) x layers x kv heads x head dim x ``seq_len`` x ``kv_bytes``.
    """
    c = _cfg(config)
    n = parameter_count(c)
    bytes_per = bits / 8 + (4 / group_size if bits < 16 else 0.0)
    weights = n * bytes_per
    layers, hd = c["num_hidden_layers"], c["head_dim"]
    kv = 2 * layers * c["num_key_value_heads"] * hd * seq_len * kv_bytes * batch_size
    lp = lora_parameter_count(c, rank, num_layers)
    lora = lp * lora_bytes
    opt = 2 * lora  # Adam: first and second moments
    grads = lora
    tokens = seq_len * batch_size
    h, i = c["hidden_size"], c["intermediate_size"]
    one_layer = tokens * (4 * h + 3 * i) * act_bytes + c["num_attention_heads"] * seq_len * seq_len * act_bytes * batch_size
    saved = tokens * h * act_bytes * (layers if grad_checkpoint else 0)
    acts = saved + one_layer * (1 if grad_checkpoint else layers)
    return MemoryBudget(name, n, lp, weights / GB, kv / GB, lora / GB, opt / GB, grads / GB, acts / GB,
                        bits, seq_len, rank, num_layers)


def architecture_config(model: Any) -> dict[str, Any]:
    """The architecture config of an mlx-lm model (its ``args``: hidden size, layers, heads, ...), the
    fields :func:`memory_budget` reads; ``{}`` for a model without ``args``."""
    import dataclasses

    args = getattr(model, "args", None)
    if args is None:
        return {}
    return dataclasses.asdict(args) if dataclasses.is_dataclass(args) else dict(vars(args))


def budget_table(budgets: Sequence[MemoryBudget]) -> Any:
    """Budgets side by side (items as rows, models as columns), as a DataFrame."""
    import pandas as pd

    df = pd.DataFrame([r for b in budgets for r in b.rows()])
    return df.pivot(index="item", columns="model", values="GB").loc[[r["item"] for r in budgets[0].rows()]]


@dataclass
class PhasePlan:
    """Planned work of one phase: generation (prompts x samples x tokens) and training (iters x tokens)."""

    phase: int
    prompts: int
    samples_per_prompt: int
    gen_tokens_per_sample: float
    train_iters: int
    train_tokens_per_iter: float


def plan_from_banks(plan: Sequence[PhasePlan | Mapping[str, Any]],
                    sizes: Sequence[Mapping[str, Any]] | None = None) -> list[PhasePlan]:
    """The plan with each phase's ``prompts`` replaced by its v2 bank's real size
    (:func:`lekutils.data.compose.bank_sizes`; ``user_turns``: a conversation counts once per user
    turn, since each turn is generated). Samples and tokens stay the plan's assumptions; a phase
    without a bank keeps its planned prompts."""
    from lekutils.data.compose import bank_sizes

    by_phase = {int(r["phase"]): r for r in (bank_sizes() if sizes is None else sizes)}
    out = []
    for p in plan:
        p = p if isinstance(p, PhasePlan) else PhasePlan(**p)
        row = by_phase.get(int(p.phase))
        n = int(row.get("user_turns") or row.get("prompts") or 0) if row else 0
        out.append(PhasePlan(**{**asdict(p), "prompts": n or p.prompts}))
    return out


def time_budget(plan: Sequence[PhasePlan | Mapping[str, Any]], *, gen_tokens_per_s: float,
                train_tokens_per_s: float, throughput_scale: float = 1.0, label: str = "this machine") -> Any:
    """Hours per phase for generation and training from measured throughputs (a DataFrame with a
    total row and the curriculum's guesses beside the totals).

    ``throughput_scale`` divides both throughputs (e.g. the parameter ratio to extrapolate a small
    model's speed to a large one on the same machine: rough, compute-bound assumption).
    """
    import pandas as pd

    rows = []
    for p in plan:
        p = p if isinstance(p, PhasePlan) else PhasePlan(**p)
        gen_tok = p.prompts * p.samples_per_prompt * p.gen_tokens_per_sample
        tr_tok = p.train_iters * p.train_tokens_per_iter
        rows.append({"phase": p.phase, "generated_tokens": gen_tok, "trained_tokens": tr_tok,
                     "data_generation_h": gen_tok * throughput_scale / gen_tokens_per_s / 3600,
                     "training_h": tr_tok * throughput_scale / train_tokens_per_s / 3600})
    df = pd.DataFrame(rows)
    total = {"phase": "total", **{k: df[k].sum() for k in df.columns if k != "phase"}}
    df = pd.concat([df, pd.DataFrame([total])], ignore_index=True)
    df["estimate_for"] = label
    g, t = CURRICULUM_HOURS["data_generation"], CURRICULUM_HOURS["training"]
    df["curriculum_data_generation_h"] = [None] * (len(df) - 1) + [f"{g[0]:.0f}-{g[1]:.0f}"]
    df["curriculum_training_h"] = [None] * (len(df) - 1) + [f"{t[0]:.0f}-{t[1]:.0f}"]
    return df
