"""Bad input files give one clear error naming the file (and line): YAML, probe JSON, ``score`` inputs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from lekutils.core.errors import DataError
from lekutils.core.jsonl import duplicate_keys, read_json_file
from lekutils.data.probes import load_probe_file
from lekutils.runner.params import load_yaml

GOOD_PROBE = '{"id": "A", "domain": "x", "prompt": "hello"}'


def test_yaml_duplicate_keys_are_refused_with_lines(tmp_path: Path) -> None:
    f = tmp_path / "p.yaml"
    f.write_text("max_tokens: 64\nnested:\n  a: 1\n  a: 2\nlist: [1, 2]\nmax_tokens: 4096\n")
    with pytest.raises(DataError) as e:
        load_yaml(f)
    assert e.value.path == str(f)
    assert [(p.line, "duplicate key" in p.message) for p in e.value.problems] == [(4, True), (6, True)]
    assert "'max_tokens' (first on line 1)" in str(e.value)
    f.write_text("a: 1\nb: {x: 1}\n<<: {c: 2}\n")  # ordinary YAML still loads
    assert load_yaml(f) == {"a": 1, "b": {"x": 1}, "c": 2}


def test_yaml_non_utf8_directory_missing(tmp_path: Path) -> None:
    f = tmp_path / "p.yaml"
    f.write_bytes(b"a: 1\nname: caf\xe9\n")
    with pytest.raises(DataError, match=r"line 2, column 10: not UTF-8 text \(byte 0xe9\)"):
        load_yaml(f)
    with pytest.raises(DataError, match="expected a YAML file, found a directory"):
        load_yaml(tmp_path)
    with pytest.raises(DataError, match="file not found"):
        load_yaml(tmp_path / "nope.yaml")


def test_unreadable_yaml_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    f = tmp_path / "p.yaml"
    f.write_text("a: 1\n")

    def deny(self: Path) -> bytes:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "read_bytes", deny)
    with pytest.raises(DataError) as e:
        load_yaml(f)
    assert str(e.value) == f"{f}: cannot read YAML file: Permission denied"


@pytest.mark.parametrize("text,line", [
    (f'[\n  {GOOD_PROBE},\n  {{"id": "B", "domain": "x",\n   "prompt": "a", "prompt": "b"}}\n]\n', 4),
    (f'{GOOD_PROBE}\n{{"id": "B", "domain": "x", "prompt": "a", "extra": {{"k": 1, "k": 2}}}}\n', 2),
])
def test_probe_json_duplicate_keys_refused_with_line(tmp_path: Path, text: str, line: int) -> None:
    f = tmp_path / ("p.json" if text.startswith("[") else "p.jsonl")
    f.write_text(text)
    with pytest.raises(DataError) as e:
        load_probe_file(f)
    assert e.value.path == str(f) and e.value.problems[0].line == line
    assert "duplicate key" in e.value.problems[0].message


def test_duplicate_keys_scanner_and_strict_reader(tmp_path: Path) -> None:
    assert duplicate_keys('{"a": {"a": 1}, "b": ["a", "a"], "c": "\\"a\\""}') == []
    probs = duplicate_keys('{"a": 1,\n "b": {"x": 1, "y": 2},\n "a": 3}')
    assert [(p.line, p.message) for p in probs] == [(3, "duplicate key 'a' (first on line 1)")]
    f = tmp_path / "m.json"
    f.write_text('{"a": 1, "a": 2}')
    with pytest.raises(DataError, match="line 1: duplicate key 'a'"):
        read_json_file(f)
    f.write_bytes(b'{"a": "\xff"}')
    with pytest.raises(DataError, match="not UTF-8"):
        read_json_file(f)
    with pytest.raises(DataError, match="found a directory"):
        read_json_file(tmp_path)


def _score(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lekutils", "score", *args, "--no-write"], capture_output=True,
                          text=True, timeout=120)


def test_score_cli_empty_nonutf8_directory_exit_2_naming_the_file(tmp_path: Path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b'{"type": "probe", "id": "\xff"}\n')
    for f, what in [(empty, "no probe records"), (bad, "line 1: not UTF-8"), (tmp_path, "found a directory")]:
        proc = _score(str(f))
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.startswith(f"error: {f}: ") and what in proc.stderr and "Traceback" not in proc.stderr


def test_run_cli_bad_param_files_exit_2_one_line(tmp_path: Path) -> None:
    dup = tmp_path / "dup.yaml"
    dup.write_text("max_tokens: 64\nmax_tokens: 4096\n")
    nonutf = tmp_path / "bad.yaml"
    nonutf.write_bytes(b"max_tokens: 64\n# caf\xe9\n")
    for f, what in [(tmp_path, "found a directory"), (dup, "line 2, column 1: duplicate key 'max_tokens'"),
                    (nonutf, "line 2, column 6: not UTF-8")]:
        proc = subprocess.run([sys.executable, "-m", "lekutils", "run", "80_ab_test", "-f", str(f), "--dry-run"],
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.strip() == f"error: {f}: {what}" or (
            proc.stderr.startswith(f"error: {f}: ") and what in proc.stderr), proc.stderr
        assert "Traceback" not in proc.stderr


def test_other_readers_name_file_and_line(tmp_path: Path) -> None:
    """Model labels (YAML), gate tables and adapter configs (JSON) use the strict readers too."""
    from lekutils.report.labels import load_models
    from lekutils.train.adapters import AdapterError, read_adapter_config

    labels = tmp_path / "models.yaml"
    labels.write_text("models:\n  a: {label: A}\n  a: {label: B}\n")
    with pytest.raises(DataError, match="line 3, column 3: duplicate key 'a'"):
        load_models(labels)
    (tmp_path / "adapter_config.json").write_bytes(b'{"num_layers": 2,\n "x": "\xff"}')
    with pytest.raises(AdapterError, match="line 2: adapter config is not UTF-8"):
        read_adapter_config(tmp_path)
