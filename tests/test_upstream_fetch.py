"""``python -m lekutils upstream fetch``: pinned clone into the cache, sha256 verification, all or nothing,
and the lookup order ($LEK_UPSTREAM, then the fetched folder, then ../shared/upstream).

No network: the sources are local git repositories built in the test (file:// URLs)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lekutils.__main__ import main
from lekutils.core import upstream as U
from lekutils.core.errors import DataError
from lekutils.core.hashing import sha256_file

GIT = ["git", "-c", "user.name=test", "-c", "user.email=test@example.invalid", "-c", "commit.gpgsign=false",
       "-c", "init.defaultBranch=main"]

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


def _git(repo: Path, *args: str) -> str:
    return subprocess.run([*GIT, *args], cwd=repo, check=True, capture_output=True, text=True).stdout.strip()


def _repo(path: Path, files: dict[str, bytes]) -> tuple[Path, str]:
    """A git repository at ``path`` holding ``files`` (repository path -> bytes); returns (path, commit)."""
    path.mkdir(parents=True)
    _git(path, "init", "--quiet")
    return path, _commit(path, files)


def _commit(repo: Path, files: dict[str, bytes], remove: tuple[str, ...] = ()) -> str:
    for name, data in files.items():
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_bytes(data)
    for name in remove:
        (repo / name).unlink()
    _git(repo, "add", "-A")
    _git(repo, "commit", "--quiet", "-m", "data")
    return _git(repo, "rev-parse", "HEAD")


SYNTH = {  # workbook name -> (source, path in the source repository, bytes)
    "seeds/P01-P20.json": ("lem", "seeds/P01-P20.json", b'[{"id": "P01", "domain": "X", "prompt": "p?"}]\n'),
    "benchmarks/ab-base-1b-mlxlm.jsonl": ("lem", "benchmarks/ab-base-1b-mlxlm.jsonl", b'{"type": "summary"}\n'),
    "kernel/claude-native.json": ("agent", "codex/ethics/kernel/claude-native.json", '{"k": "→"}\n'.encode()),
}


@pytest.fixture()
def synth(tmp_path: Path) -> tuple[U.Pin, dict[str, Path]]:
    """Two local source repositories and a pin of their files (synthetic data; no upstream needed)."""
    repos, sources = {}, {}
    for src in ("lem", "agent"):
        files = {path: data for s, path, data in SYNTH.values() if s == src}
        repos[src], commit = _repo(tmp_path / "src" / src, files)
        sources[src] = U.Source(src, (repos[src]).as_uri(), commit)
    files = tuple(U.PinnedFile(name, s, path, U.sha256_bytes(data)) for name, (s, path, data) in SYNTH.items())
    return U.Pin(sources, files, path="test-pin"), repos


def _entries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def test_fetch_installs_verified_files_under_the_workbook_names(synth, tmp_path: Path) -> None:
    pin, _ = synth
    said: list[str] = []
    folder = U.fetch(pin, cache=tmp_path / "cache", say=said.append)
    assert folder == tmp_path / "cache" / pin.key
    assert pin.key == f"agent-{pin.sources['agent'].commit[:12]}+lem-{pin.sources['lem'].commit[:12]}"
    for name, (_s, _p, data) in SYNTH.items():
        assert (folder / name).read_bytes() == data
    marker = json.loads((folder / U.MARKER).read_text())
    assert marker["sources"]["lem"]["commit"] == pin.sources["lem"].commit
    assert set(marker["files"]) == set(SYNTH)
    assert _entries(tmp_path / "cache") == [pin.key]  # no staging or clone left behind
    assert not list(folder.glob(".git-*"))
    assert U.verify(folder, pin) == []
    assert U.fetched_dir(pin, tmp_path / "cache") == folder
    said.clear()
    assert U.fetch(pin, cache=tmp_path / "cache", say=said.append) == folder
    assert said and said[0].startswith("already fetched")  # intact: not cloned again


def test_hash_mismatch_is_a_clear_error_and_leaves_nothing(synth, tmp_path: Path) -> None:
    pin, repos = synth
    changed = _commit(repos["lem"], {"seeds/P01-P20.json": b'[{"id": "P01", "domain": "X", "prompt": "edited"}]\n'})
    cache = tmp_path / "cache"
    with pytest.raises(U.UpstreamError) as e:
        U.fetch(pin.with_source("lem", commit=changed), cache=cache)
    msg = str(e.value)
    assert "seeds/P01-P20.json: sha256" in msg and "differs from the pinned" in msg and "nothing was installed" in msg
    assert "benchmarks" not in msg  # only the changed file is named
    assert _entries(cache) == []  # no target, no staging folder, no clone
    # the CLI says the same on stderr and exits 1; --url and --commit select the LEM source
    rc = main(["upstream", "fetch", "--url", repos["lem"].as_uri(), "--commit", changed, "--cache", str(cache),
               "--pin", str(_write_pin(pin, tmp_path / "pin.json")),
               "--source", f"agent={repos['agent'].as_uri()}@{pin.sources['agent'].commit}"])
    assert rc == 1 and _entries(cache) == []


def test_missing_file_and_unknown_commit(synth, tmp_path: Path) -> None:
    pin, repos = synth
    gone = _commit(repos["lem"], {}, remove=("benchmarks/ab-base-1b-mlxlm.jsonl",))
    with pytest.raises(U.UpstreamError, match=r"benchmarks/ab-base-1b-mlxlm.jsonl: not found"):
        U.fetch(pin.with_source("lem", commit=gone), cache=tmp_path / "cache")
    with pytest.raises(U.UpstreamError, match="not found in"):
        U.fetch(pin.with_source("lem", commit="0" * 40), cache=tmp_path / "cache")
    with pytest.raises(U.UpstreamError, match="failed"):
        U.fetch(pin.with_source("lem", url=(tmp_path / "nowhere").as_uri()), cache=tmp_path / "cache")
    assert _entries(tmp_path / "cache") == []


def test_damaged_fetch_is_replaced(synth, tmp_path: Path) -> None:
    pin, _ = synth
    folder = U.fetch(pin, cache=tmp_path / "cache")
    (folder / "seeds/P01-P20.json").write_text("tampered")
    assert [p.field for p in U.verify(folder, pin)] == ["seeds/P01-P20.json"]
    assert U.fetch(pin, cache=tmp_path / "cache") == folder
    assert U.verify(folder, pin) == [] and _entries(tmp_path / "cache") == [pin.key]


def _write_pin(pin: U.Pin, path: Path) -> Path:
    doc = {"version": 1,
           "sources": {n: {"url": s.url, "commit": s.commit} for n, s in pin.sources.items()},
           "files": {f.name: {"source": f.source, "path": f.path, "sha256": f.sha256} for f in pin.files}}
    path.write_text(json.dumps(doc))
    return path


def test_pin_file_errors_name_the_field(tmp_path: Path) -> None:
    bad = tmp_path / "pin.json"
    bad.write_text(json.dumps({"sources": {"lem": {"url": "x"}},
                               "files": {"../x": {"source": "nope", "sha256": "abc"}}}))
    with pytest.raises(DataError) as e:
        U.load_pin(bad)
    text = str(e.value)
    assert "sources.lem" in text and "files.../x" in text and "sha256" in text and "relative path" in text


def test_shipped_pin_names_upstream_commits_and_every_file() -> None:
    pin = U.load_pin()
    assert set(pin.sources) == {"lem", "agent"}
    assert pin.sources["lem"].url == "https://github.com/LetheanNetwork/LEM.git"
    assert all(len(s.commit) == 40 for s in pin.sources.values())
    names = {f.name for f in pin.files}
    assert {"seeds/P01-P20.json", "seeds/P01-P100-rephrased.json", "kernel/claude-native.json",
            "kernel/lek-1-kernel.txt", "benchmarks/ab-p100-gemma3-12b-mlxlm.jsonl"} <= names
    assert len(names) == 15


def test_shipped_pin_matches_the_reference_data(upstream: Path) -> None:
    """The pinned hashes are those of the data the published figures come from."""
    assert U.verify(upstream) == []


def test_fetch_of_the_shipped_pin_from_local_clones(upstream: Path, tmp_path: Path) -> None:
    """The real pin, sources rebuilt locally from the reference data in upstream's layout (tmp only)."""
    pin = U.load_pin()
    repos: dict[str, Path] = {}
    commits: dict[str, str] = {}
    for src in pin.sources:
        files = {f.path: (upstream / f.name).read_bytes() for f in pin.files if f.source == src}
        repos[src], commits[src] = _repo(tmp_path / "src" / src, files)
    cache = tmp_path / "cache"
    rc = main(["upstream", "fetch", "--url", repos["lem"].as_uri(), "--commit", commits["lem"],
               "--source", f"agent={repos['agent'].as_uri()}@{commits['agent']}", "--cache", str(cache)])
    assert rc == 0
    [folder] = [cache / n for n in _entries(cache)]
    assert folder.name == f"agent-{commits['agent'][:12]}+lem-{commits['lem'][:12]}"
    assert U.verify(folder, pin) == []
    assert sha256_file(folder / "kernel/lek-1-kernel.txt") == sha256_file(upstream / "kernel/lek-1-kernel.txt")


def test_lookup_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lekutils.core.paths import upstream_dir

    shared = tmp_path / "shared" / "upstream"
    shared.mkdir(parents=True)
    monkeypatch.setattr(U, "shared_dir", lambda: shared)
    monkeypatch.setenv("LEK_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("LEK_UPSTREAM", raising=False)
    assert upstream_dir() == shared  # nothing fetched: ../shared/upstream
    fetched = tmp_path / "cache" / "upstream" / U.load_pin().key
    fetched.mkdir(parents=True)
    assert upstream_dir() == shared  # an incomplete fetch (no marker) is not used
    (fetched / U.MARKER).write_text("{}")
    assert upstream_dir() == fetched  # the fetched folder before ../shared/upstream
    monkeypatch.setenv("LEK_UPSTREAM", str(tmp_path / "mine"))
    assert upstream_dir() == tmp_path / "mine"  # $LEK_UPSTREAM first, even where absent
    assert U.expand("{upstream}/seeds/a.json") == str(tmp_path / "mine" / "seeds" / "a.json")
    assert U.expand("data/x.json") == "data/x.json"
    rc = main(["upstream", "where"])
    assert rc == 0


def test_probe_sets_expand_the_upstream_placeholder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lekutils.data.probes import build_probe_sets

    up = tmp_path / "up"
    (up / "seeds").mkdir(parents=True)
    (up / "seeds" / "P01-P20.json").write_text(json.dumps([{"id": "P01", "domain": "Test", "prompt": "Why?"}]))
    monkeypatch.setenv("LEK_UPSTREAM", str(up))
    index = build_probe_sets({"p20": ["{upstream}/seeds/P01-P20.json"], "gone": ["{upstream}/seeds/none.json"]},
                             tmp_path / "out", skip_missing=True)
    assert index["sets"]["p20"]["n"] == 1
    assert list(index["sets"]["p20"]["sources"]) == [str(up / "seeds" / "P01-P20.json")]
    assert index["skipped"] == {"gone": [str(up / "seeds" / "none.json")]}


def test_summary_names_skipped_reproduction_tests_and_the_command(repo_root: Path, tmp_path: Path) -> None:
    """Without upstream data, the pytest summary counts the skipped reproduction tests and names the fetch."""
    env = {**os.environ, "LEK_UPSTREAM": str(tmp_path / "absent"), "LEK_CACHE": str(tmp_path / "cache")}
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "tests/test_scoring_upstream.py"], cwd=repo_root, env=env, capture_output=True,
                          text=True, timeout=300)
    out = done.stdout
    assert done.returncode == 0, out[-2000:]
    assert "upstream reference data" in out
    line = next(x for x in out.splitlines() if "reproduction test(s) skipped" in x)
    n_skipped = int(line.split()[0])
    assert n_skipped >= 5 and f"{n_skipped} skipped" in out
    assert "python -m lekutils upstream fetch" in out
