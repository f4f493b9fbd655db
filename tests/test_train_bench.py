"""The training benchmark runs both sides (ours and the mlx_lm lora CLI) on a tiny model and reads both."""

from __future__ import annotations

from pathlib import Path

from lekutils.bench.train import _ANSI, _LINE, bench
from lekutils.engine.models.tiny import save_model_dir


def test_cli_report_line_parses() -> None:
    line = "  \x1b[38;5;244m  10\x1b[0m    \x1b[1;32m6.243 ▼\x1b[0m    \x1b[1m1,350\x1b[0m    \x1b[38;5;244m  4.9k\x1b[0m\n"
    m = _LINE.match(_ANSI.sub("", line))
    assert m and m.group(1) == "10" and m.group(3) == "1,350" and m.group(4) == "4.9"
    assert not _LINE.match(_ANSI.sub("", "    30    val 4.960    0.54s"))


def test_bench_tiny_model(tmp_path: Path) -> None:
    model = save_model_dir(tmp_path / "model", layers=2, hidden=32)
    res = bench(str(model), iters=9, report=3, repeats=1, num_layers=2, rank=4, max_seq_length=64,
                work=tmp_path / "work")
    assert res["window"] == [3, 6]
    for side in ("ours", "cli"):
        run = res["runs"][side][0]
        assert run["steps"] == 3 and run["seconds"] > 0 and run["tokens"] > 0
        assert res[side]["steps_per_s"] > 0
    # same data, seed and batches on both sides: same tokens in the window (CLI reads 0.1k resolution)
    assert abs(res["runs"]["ours"][0]["tokens"] - res["runs"]["cli"][0]["tokens"]) <= 100
    assert res["ratio_steps_per_s"] > 0
