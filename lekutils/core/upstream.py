"""Upstream LEK reference data: the pin, the fetch into the user cache, and where the workbook finds it.

The pin (``data/upstream/pin.json``, shipped) names each source repository (LetheanNetwork/LEM for
seeds and published A/B records, dAppCore/agent for the JSON kernel) at a commit, and every file the
workbook reads with its path there and its sha256. :func:`fetch` clones each source at its commit,
copies the pinned files into a staging folder under the workbook's names (``seeds/...``,
``kernel/...``, ``benchmarks/...``), verifies every sha256, and only then renames the folder into
place (``<cache>/upstream/<commits>``): a mismatch or a missing file leaves nothing behind.

Lookup order (:func:`find_upstream`, used by :func:`lekutils.core.paths.upstream_dir`):
``$LEK_UPSTREAM``, then the fetched folder of the shipped pin, then ``../shared/upstream`` beside
the repository. Nothing here copies upstream files into the repository.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from lekutils.core.errors import DataError, Problem
from lekutils.core.hashing import sha256_bytes, sha256_file
from lekutils.core.paths import DATA_DIR, REPO_ROOT

PIN_FILE = DATA_DIR / "upstream" / "pin.json"
MARKER = ".lek-upstream.json"  # written last into a fetched folder: its presence means complete and verified
FETCH_COMMAND = "python -m lekutils upstream fetch"
PLACEHOLDER = "{upstream}"


class UpstreamError(RuntimeError):
    """A fetch that could not complete (git failed, a file missing or with the wrong sha256)."""


@dataclass(frozen=True)
class Source:
    """A repository at a commit."""

    name: str
    url: str
    commit: str


@dataclass(frozen=True)
class PinnedFile:
    """A file the workbook reads: its name in the upstream folder, where it lives upstream, its sha256."""

    name: str
    source: str
    path: str
    sha256: str


@dataclass(frozen=True)
class Pin:
    """Sources at commits and the files taken from them."""

    sources: Mapping[str, Source]
    files: tuple[PinnedFile, ...]
    path: str = str(PIN_FILE)

    @property
    def key(self) -> str:
        """The cache folder name: the used sources' commits (12 hex digits each), in name order."""
        used = sorted({f.source for f in self.files})
        return "+".join(f"{n}-{self.sources[n].commit[:12]}" for n in used)

    def with_source(self, name: str, *, url: str | None = None, commit: str | None = None) -> Pin:
        """The pin with one source's URL and/or commit replaced (``--url`` / ``--commit``)."""
        if name not in self.sources:
            raise ValueError(f"unknown upstream source {name!r} (pin has: {', '.join(sorted(self.sources))})")
        src = self.sources[name]
        new = replace(src, url=url or src.url, commit=commit or src.commit)
        return replace(self, sources={**self.sources, name: new})


def load_pin(path: str | os.PathLike[str] = PIN_FILE) -> Pin:
    """Read and check a pin file; a :class:`DataError` names every bad field."""
    from lekutils.core.jsonl import read_json_file

    doc = read_json_file(path, "upstream pin file")
    problems: list[Problem] = []
    if not isinstance(doc, dict):
        raise DataError(path, "must be a JSON object with 'sources' and 'files'")
    sources: dict[str, Source] = {}
    for name, s in (doc.get("sources") or {}).items():
        if not isinstance(s, dict) or not isinstance(s.get("url"), str) or not isinstance(s.get("commit"), str):
            problems.append(Problem("needs 'url' and 'commit' strings", field=f"sources.{name}"))
            continue
        sources[name] = Source(name, s["url"], s["commit"])
    files: list[PinnedFile] = []
    for name, f in (doc.get("files") or {}).items():
        where = f"files.{name}"
        if not isinstance(f, dict):
            problems.append(Problem("must be an object with 'source', 'path', 'sha256'", field=where))
            continue
        if f.get("source") not in sources:
            problems.append(Problem(f"'source' must be one of {sorted(sources)}", field=where))
        digest = str(f.get("sha256", ""))
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            problems.append(Problem("'sha256' must be 64 lower-case hex digits", field=where))
        if Path(name).is_absolute() or ".." in Path(name).parts:
            problems.append(Problem("the file name must be a relative path inside the upstream folder", field=where))
        files.append(PinnedFile(name, str(f.get("source")), str(f.get("path") or name), digest))
    if not files:
        problems.append(Problem("lists no files", field="files"))
    if problems:
        raise DataError(path, problems)
    return Pin(sources, tuple(files), str(path))


def cache_root() -> Path:
    """``<user cache>/upstream`` (``$LEK_CACHE``, else ``$XDG_CACHE_HOME``/``~/.cache`` + ``/lekutils``); not created."""
    env = os.environ.get("LEK_CACHE")
    base = Path(env) if env else Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "lekutils"
    return base.expanduser() / "upstream"


def fetched_dir(pin: Pin | None = None, cache: str | os.PathLike[str] | None = None) -> Path | None:
    """The pin's fetched folder if a complete fetch is there (its marker written last), else None."""
    try:
        pin = pin or load_pin()
    except (DataError, OSError):
        return None
    folder = (Path(cache) if cache else cache_root()) / pin.key
    return folder if (folder / MARKER).is_file() else None


def shared_dir() -> Path:
    """``../shared/upstream`` beside the repository (the fallback of the lookup)."""
    return REPO_ROOT.parent / "shared" / "upstream"


def candidates() -> list[tuple[str, Path | None, bool]]:
    """The lookup order: (label, folder it names or None, whether it is usable)."""
    env = os.environ.get("LEK_UPSTREAM")
    try:
        expected: Path | None = cache_root() / load_pin().key
    except (DataError, OSError):
        expected = None
    fetched = fetched_dir()
    return [("$LEK_UPSTREAM", Path(env).expanduser() if env else None, bool(env)),
            (f"fetched ({FETCH_COMMAND})", fetched or expected, fetched is not None),
            ("../shared/upstream", shared_dir(), shared_dir().is_dir())]


def find_upstream() -> Path:
    """The upstream folder: ``$LEK_UPSTREAM`` if set (even if absent: an explicit choice), else the
    fetched folder of the shipped pin, else ``../shared/upstream`` (which may not exist)."""
    for _label, folder, usable in candidates():
        if usable and folder is not None:
            return folder
    return shared_dir()


def expand(path: str | os.PathLike[str], upstream: str | os.PathLike[str] | None = None) -> str:
    """``path`` with ``{upstream}`` replaced by the upstream folder (:func:`find_upstream` by default)."""
    text = str(path)
    if PLACEHOLDER not in text:
        return text
    return text.replace(PLACEHOLDER, str(upstream if upstream is not None else find_upstream()))


def verify(folder: str | os.PathLike[str], pin: Pin | None = None) -> list[Problem]:
    """Every pinned file of ``folder`` checked against the pin: one problem per missing or changed file."""
    pin = pin or load_pin()
    folder = Path(folder)
    problems = []
    for f in pin.files:
        p = folder / f.name
        if not p.is_file():
            problems.append(Problem("missing", field=f.name))
        elif (got := sha256_file(p)) != f.sha256:
            problems.append(Problem(f"sha256 {got} differs from the pinned {f.sha256}", field=f.name))
    return problems


def _git(args: list[str], cwd: Path, what: str) -> bytes:
    try:
        done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, check=False,
                              env={**os.environ, "GIT_TERMINAL_PROMPT": "0"})
    except FileNotFoundError as e:
        raise UpstreamError("git is not installed: it is needed to fetch the upstream data") from e
    if done.returncode != 0:
        err = done.stderr.decode("utf-8", "replace").strip().splitlines()
        raise UpstreamError(f"{what} failed: {err[-1] if err else 'git exit status ' + str(done.returncode)}")
    return done.stdout


def _checkout(src: Source, into: Path, say: Callable[[str], None]) -> str:
    """A bare-minimum clone of ``src`` at its commit in ``into``; returns the full commit hash."""
    into.mkdir(parents=True)
    _git(["init", "--quiet"], into, "git init")
    _git(["remote", "add", "origin", src.url], into, "git remote add")
    say(f"fetching {src.url} at {src.commit}")
    try:  # one commit, blobs on demand where the server supports it
        _git(["fetch", "--quiet", "--depth", "1", "--filter=blob:none", "origin", src.commit], into,
             f"git fetch {src.url} {src.commit}")
    except UpstreamError:  # a short hash or a server refusing a hash: fetch the history, then resolve
        _git(["fetch", "--quiet", "--filter=blob:none", "origin"], into, f"git fetch {src.url}")
    try:
        return _git(["rev-parse", "--verify", "--quiet", f"{src.commit}^{{commit}}"], into,
                    "git rev-parse").decode().strip()
    except UpstreamError as e:
        raise UpstreamError(f"commit {src.commit} not found in {src.url}") from e


def fetch(pin: Pin | None = None, *, cache: str | os.PathLike[str] | None = None, force: bool = False,
          say: Callable[[str], None] = lambda _m: None) -> Path:
    """Clone each source at its pinned commit, verify every pinned file's sha256 and install the
    files under the workbook's names in ``<cache>/upstream/<pin.key>``; returns that folder.

    All or nothing: files are gathered and checked in a staging folder beside the target, which is
    renamed into place only when every file is present and matches (the marker file is written
    last). A folder already fetched and intact is kept unless ``force``. Raises
    :class:`UpstreamError` naming every missing or changed file.
    """
    pin = pin or load_pin()
    root = Path(cache) if cache else cache_root()
    target = root / pin.key
    if not force and (target / MARKER).is_file() and not verify(target, pin):
        say(f"already fetched and verified: {target}")
        return target
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{pin.key}.", suffix=".partial", dir=root))
    try:
        commits: dict[str, str] = {}
        problems: list[str] = []
        for name in sorted({f.source for f in pin.files}):
            src = pin.sources[name]
            clone = staging / f".git-{name}"
            commits[name] = _checkout(src, clone, say)
            for f in (f for f in pin.files if f.source == name):
                try:
                    data = _git(["cat-file", "blob", f"{commits[name]}:{f.path}"], clone, f"reading {f.path}")
                except UpstreamError:
                    problems.append(f"{f.name}: not found at {src.url} {commits[name][:12]}:{f.path}")
                    continue
                if (got := sha256_bytes(data)) != f.sha256:
                    problems.append(f"{f.name}: sha256 {got} differs from the pinned {f.sha256} "
                                    f"({src.url} {commits[name][:12]}:{f.path})")
                    continue
                out = staging / f.name
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_bytes(data)
            shutil.rmtree(clone)
        if problems:
            raise UpstreamError(f"upstream data does not match the pin {pin.path}; nothing was installed:\n  - "
                                + "\n  - ".join(problems))
        marker: dict[str, Any] = {
            "fetched": datetime.now(timezone.utc).isoformat(timespec="seconds"), "pin": pin.path,
            "sources": {n: {"url": pin.sources[n].url, "commit": c} for n, c in commits.items()},
            "files": {f.name: {"source": f.source, "path": f.path, "sha256": f.sha256} for f in pin.files},
        }
        (staging / MARKER).write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")
        old = None
        if target.exists():  # replace a damaged or forced folder: move it aside first, then swap
            old = Path(tempfile.mkdtemp(prefix=f".{pin.key}.", suffix=".old", dir=root))
            os.replace(target, old / "x")
        os.replace(staging, target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        say(f"installed {len(pin.files)} verified files in {target}")
        return target
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
