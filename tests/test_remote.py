"""The remote (OpenAI-compatible) generator against fake endpoints: tiny stdlib HTTP servers on
127.0.0.1 that answer, fail with 500/429/400, time out, send malformed JSON or are not there.
Spec parsing, seeds, records, API key handling, retries then a clear error with nothing partial
written, failover, load balancing and resume. (Real ``mlx_lm.server`` runs: test_remote_e2e.py.)"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from lekutils.data.kernels import Condition
from lekutils.data.probes import Probe
from lekutils.engine.base import GenerationRequest, SamplerSettings, generate_resumable, sample_seed
from lekutils.engine.factory import open_generator
from lekutils.engine.models import fingerprint
from lekutils.engine.models.specs import ModelSpecError, resolve
from lekutils.engine.remote import RemoteError, RemoteGenerator, endpoint_name, model_id, parse_spec
from lekutils.tasks.abtest import load_ab, load_ab_summary, run_ab, run_name
from lekutils.tasks.loop import work_path

FAST = {"retries": 2, "backoff_s": 0.01, "down_s": 0.05, "timeout_s": 5.0, "connect_timeout_s": 1.0}


class Fake:
    """A fake chat-completions endpoint; ``mode`` (or a function of the request count) decides each answer."""

    def __init__(self, mode: str | Callable[[int], str] = "ok", delay: float = 0.0, model: str = "fake-model-1"):
        self.mode, self.delay, self.model = mode, delay, model
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a: Any) -> None:
                pass

            def _send(self, code: int, body: bytes, ctype: str = "application/json") -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                try:
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout test)
                    pass

            def do_GET(self) -> None:
                self._send(200, json.dumps({"object": "list", "data": [{"id": fake.model}]}).encode())

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with fake.lock:
                    fake.requests.append(body)
                    fake.headers.append(dict(self.headers))
                    n = len(fake.requests)
                mode = fake.mode(n) if callable(fake.mode) else fake.mode
                if fake.delay:
                    time.sleep(fake.delay)
                if mode == "timeout":
                    time.sleep(1.5)
                    mode = "ok"
                if mode == "ok":
                    user = body["messages"][-1]["content"]
                    text = f"answer to {user} (seed {body.get('seed')}, t={body['temperature']})"
                    self._send(200, json.dumps({
                        "id": "x", "object": "chat.completion", "model": fake.model,
                        "choices": [{"index": 0, "finish_reason": "stop",
                                     "message": {"role": "assistant", "content": text}}],
                        "usage": {"prompt_tokens": 7, "completion_tokens": 5, "total_tokens": 12}}).encode())
                elif mode == "malformed":
                    self._send(200, b'{"choices": [{"message": ')
                elif mode == "noshape":
                    self._send(200, json.dumps({"model": fake.model, "choices": []}).encode())
                elif mode in ("500", "429", "400"):
                    self._send(int(mode), json.dumps({"error": f"fake {mode}"}).encode())
                else:
                    raise AssertionError(mode)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fakes():
    made: list[Fake] = []

    def make(*a: Any, **k: Any) -> Fake:
        made.append(Fake(*a, **k))
        return made[-1]

    yield make
    for f in made:
        f.close()


def _dead_url() -> str:
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    return f"http://127.0.0.1:{port}/v1"


PROBES = [Probe(f"P{i:02d}", "ethics", f"question {i}?", {}) for i in range(3)]
CONDS = [Condition("baseline", None, None, None), Condition("k", "Be kind.", None, None)]


# -- specs --------------------------------------------------------------------------------------------
def test_parse_spec_forms_and_errors() -> None:
    rs = parse_spec("openai:mlx-community/gemma-3-27b@http://10.0.0.1:8080/v1/,https://h.example/v1#in_flight=2")
    assert rs.model == "mlx-community/gemma-3-27b"
    assert rs.base_urls == ("http://10.0.0.1:8080/v1", "https://h.example/v1")
    assert rs.endpoints == ["10.0.0.1:8080/v1", "h.example/v1"] and rs.options == {"in_flight": "2"}
    assert model_id("openai:m:7b@http://a:1/v1,http://b:2/v1") == "openai:m:7b"
    assert endpoint_name("http://user@host:9/v1?x=1") == "host:9/v1"
    src = resolve("openai:m@http://127.0.0.1:1/v1")
    assert (src.kind, src.name, src.path) == ("openai", "m", None)
    for bad, why in [("openai:m", "base URL"), ("openai:@http://a/v1", "empty"),
                     ("openai:m@http://u:p@a/v1", "no credentials"), ("openai:m@http://a/v1,http://a/v1", "twice"),
                     ("openai:m@http://a/v1#bogus=1", "unknown remote option"),
                     ("openai:m@http://a/v1#in_flight=x", "not a valid int"),
                     ("openai:m@ftp://a/v1", "base URL")]:
        with pytest.raises(ModelSpecError, match=why):
            parse_spec(bad)
    with pytest.raises(ModelSpecError, match="Remote form"):
        resolve("openai:m")
    assert run_name("openai:mlx-community/gemma-3-27b@http://a:1/v1,http://b:2/v1") == "openai-gemma-3-27b"


def test_fingerprint_loads_nothing_and_names_no_key(fakes, monkeypatch) -> None:
    monkeypatch.setenv("LEK_TEST_KEY", "sk-very-secret")
    f = fakes()
    dead = _dead_url()
    fp = fingerprint(f"openai:fake-model-1@{f.url},{dead}#api_key_env=LEK_TEST_KEY")
    assert fp["kind"] == "openai" and fp["identity"] == "openai:fake-model-1" and fp["sha256"] is None
    assert fp["endpoints"] == [endpoint_name(f.url), endpoint_name(dead)]
    assert fp["server_models"] == {endpoint_name(f.url): "fake-model-1", endpoint_name(dead): None}
    assert fp["api_key_env"] == "LEK_TEST_KEY" and "sk-very-secret" not in json.dumps(fp)
    # a name the server does not list: the model id comes from a 1-token request
    fp = fingerprint(f"openai:default_model@{f.url}")
    assert fp["server_models"] == {endpoint_name(f.url): "fake-model-1"}


# -- generation ---------------------------------------------------------------------------------------
def test_samples_are_separate_seeded_requests(fakes) -> None:
    f = fakes()
    gen = open_generator(f"openai:fake-model-1@{f.url}", batch_size=4, **FAST)
    reqs = [GenerationRequest("a", "hello", "Be kind.", n_samples=3), GenerationRequest("b", "bye")]
    s = SamplerSettings(temperature=0.7, top_p=0.9, max_tokens=12, seed=5)
    got = []
    out = gen.generate(reqs, s, on_result=got.append)
    assert [(r.key, r.sample_idx) for r in out] == [("a", 0), ("a", 1), ("a", 2), ("b", 0)]
    assert sorted((r.key, r.sample_idx) for r in got) == sorted((r.key, r.sample_idx) for r in out)
    for r in out:
        assert r.seed == sample_seed(5, r.key, r.sample_idx) and f"seed {r.seed}" in r.text
        assert (r.model, r.endpoint, r.prompt_format) == ("fake-model-1", endpoint_name(f.url), "server")
        assert (r.prompt_tokens, r.generation_tokens, r.finish_reason) == (7, 5, "stop")
    assert len(f.requests) == 4 and all("n" not in b for b in f.requests)
    first = next(b for b in f.requests if b["messages"][-1]["content"] == "hello")
    assert first["messages"][0] == {"role": "system", "content": "Be kind."}
    assert (first["max_tokens"], first["top_p"], first["temperature"], first["model"]) == (12, 0.9, 0.7, "fake-model-1")
    # greedy: no seed (mlx_lm.server batches only seedless requests); only= restricts the work
    f.requests.clear()
    out = gen.generate(reqs, SamplerSettings(), only={("a", 1)})
    assert [(r.key, r.sample_idx) for r in out] == [("a", 1)] and "seed" not in f.requests[0]


def test_system_text_folded_where_the_server_has_no_system_role(fakes) -> None:
    f = fakes()
    gen = open_generator(f"openai:fake-model-1@{f.url}#system_role=false", batch_size=2, **FAST)
    reqs = [GenerationRequest("a", "hello", "Be kind."), GenerationRequest("b", "bye"),
            GenerationRequest("c", "and now?", "Be kind.", messages=({"role": "user", "content": "first"},
                                                                       {"role": "assistant", "content": "ok"}))]
    out = {r.key: r for r in gen.generate(reqs, SamplerSettings(max_tokens=4))}
    sent = {b["messages"][-1]["content"].split("\n\n")[-1]: b["messages"] for b in f.requests}
    assert sent["hello"] == [{"role": "user", "content": "Be kind.\n\nhello"}]
    assert sent["bye"] == [{"role": "user", "content": "bye"}]
    assert sent["and now?"][0] == {"role": "user", "content": "Be kind.\n\nfirst"} and len(sent["and now?"]) == 3
    assert (out["a"].prompt_format, out["b"].prompt_format, out["c"].prompt_format) == ("folded", "server", "folded")


def test_ab_through_remote_records_and_key_never_written(fakes, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("LEK_TEST_KEY", "sk-very-secret")
    f = fakes()
    spec = f"openai:fake-model-1@{f.url}#api_key_env=LEK_TEST_KEY&retries=1"
    out = tmp_path / "ab" / f"{run_name(spec)}.jsonl"
    summary = run_ab(spec, PROBES, CONDS, out, sampler=SamplerSettings(max_tokens=16), batch_size=4)
    assert all(h.get("Authorization") == "Bearer sk-very-secret" for h in f.headers)
    assert summary["total_probes"] == 3 and summary["generated_this_run"] == 6
    assert summary["model_fingerprint"]["kind"] == "openai"
    assert summary["model_fingerprint"]["server_models"] == {endpoint_name(f.url): "fake-model-1"}
    for rec in load_ab(out):
        for c in rec["conditions"].values():
            assert c["endpoint"] == endpoint_name(f.url) and c["served_model"] == "fake-model-1"
            assert c["sampler"] == SamplerSettings(max_tokens=16).to_dict()
    for p in tmp_path.rglob("*"):
        if p.is_file():
            assert b"sk-very-secret" not in p.read_bytes(), p
    # the same model on other endpoints (and other options) is the same content: nothing regenerates
    g = fakes()
    again = run_ab(f"openai:fake-model-1@{g.url},{f.url}#api_key_env=LEK_TEST_KEY", PROBES, CONDS, out,
                   sampler=SamplerSettings(max_tokens=16))
    assert again["generated_this_run"] == 0 and not g.requests


def test_missing_key_variable_is_a_clear_error(fakes, monkeypatch) -> None:
    monkeypatch.delenv("LEK_NO_SUCH_KEY", raising=False)
    f = fakes()
    with pytest.raises(RemoteError, match="LEK_NO_SUCH_KEY"):
        open_generator(f"openai:m@{f.url}", api_key_env="LEK_NO_SUCH_KEY")
    with pytest.raises(ValueError, match="no local adapter"):
        open_generator(f"openai:m@{f.url}", adapter_path="somewhere")


@pytest.mark.parametrize("mode,match", [("500", "HTTP 500"), ("timeout", "timed out"),
                                        ("malformed", "malformed response from 127.0.0.1:"),
                                        ("noshape", "malformed response from 127.0.0.1:")])
def test_retries_then_clear_error_nothing_partial(fakes, tmp_path: Path, mode: str, match: str) -> None:
    f = fakes(mode)
    opts = {**FAST, "timeout_s": 0.4} if mode == "timeout" else FAST
    out = tmp_path / "ab.jsonl"
    with pytest.raises(RemoteError, match=match) as ei:
        run_ab(f"openai:fake-model-1@{f.url}", PROBES[:1], CONDS[:1], out, batch_size=1, generator_options=opts)
    assert "after 3 attempt(s)" in str(ei.value) and endpoint_name(f.url) in str(ei.value)
    assert len(f.requests) == 3  # the first try and 2 retries
    assert not out.exists()
    wp = work_path(out)
    assert not wp.exists() or wp.read_text() == ""


def test_other_4xx_fails_at_once(fakes, tmp_path: Path) -> None:
    f = fakes("400")
    with pytest.raises(RemoteError, match=r"HTTP 400 for model 'nope'.*fake 400"):
        run_ab(f"openai:nope@{f.url}", PROBES[:1], CONDS[:1], tmp_path / "ab.jsonl", generator_options=FAST)
    assert len([b for b in f.requests if b["max_tokens"] != 1]) == 1  # (1 token: the fingerprint's probe)


def test_429_and_500_are_retried(fakes) -> None:
    f = fakes(lambda n: {1: "429", 2: "500"}.get(n, "ok"))
    gen = RemoteGenerator(f"openai:m@{f.url}", in_flight=1, **FAST)
    out = gen.generate([GenerationRequest("a", "hi")], SamplerSettings())
    assert len(out) == 1 and gen.stats["retries"] == 2 and len(f.requests) == 3


def test_failover_and_load_balancing(fakes) -> None:
    a, b = fakes(delay=0.05), fakes(delay=0.05)
    dead = _dead_url()
    gen = RemoteGenerator(f"openai:m@{dead},{a.url},{b.url}", in_flight=2, **FAST)
    reqs = [GenerationRequest(f"k{i}", f"q{i}") for i in range(16)]
    gen.check(reqs, SamplerSettings())  # the dead endpoint is reported and skipped, not fatal
    out = gen.generate(reqs, SamplerSettings())
    assert len(out) == 16
    used = {r.endpoint for r in out}
    assert used == {endpoint_name(a.url), endpoint_name(b.url)}
    assert min(len(a.requests), len(b.requests)) >= 5  # least-in-flight spreads the work
    with pytest.raises(RemoteError, match="no endpoint of 'm' answers"):
        RemoteGenerator(f"openai:m@{dead}", **FAST).check(reqs, SamplerSettings())


def test_all_endpoints_down_mid_run_then_resume(fakes, tmp_path: Path) -> None:
    """The server fails from its 3rd request on: what was answered is stored, the re-run makes only the rest."""
    broken = {"on": True}
    f = fakes(lambda n: "500" if broken["on"] and n > 2 else "ok")
    out = tmp_path / "ab.jsonl"
    spec = f"openai:fake-model-1@{f.url}"
    with pytest.raises(RemoteError):
        run_ab(spec, PROBES, CONDS, out, batch_size=1, store_every=1,
               generator_options={**FAST, "in_flight": 1})
    stored = [json.loads(x) for x in work_path(out).read_text().splitlines()]
    assert len(stored) == 2 and not out.exists()
    broken["on"] = False
    summary = run_ab(spec, PROBES, CONDS, out, batch_size=1, store_every=1, generator_options={**FAST, "in_flight": 1})
    assert summary["generated_this_run"] == 4 and summary["resumed"]
    keys = [(r["key"], r["sample_idx"]) for r in map(json.loads, work_path(out).read_text().splitlines())]
    assert len(keys) == len(set(keys)) == 6
    assert load_ab_summary(out)["total_probes"] == 3


def test_generate_resumable_drives_remote(fakes) -> None:
    f = fakes()
    gen = RemoteGenerator(f"openai:m@{f.url}", in_flight=3, **FAST)
    reqs = [GenerationRequest(f"k{i}", f"q{i}", n_samples=2) for i in range(5)]
    stored: dict[tuple[str, int], str] = {("k0", 0): "x"}
    groups: list[int] = []

    def on_chunk(rs: list) -> None:
        groups.append(len(rs))
        for r in rs:
            assert (r.key, r.sample_idx) not in stored
            stored[(r.key, r.sample_idx)] = r.text

    stats = generate_resumable(gen, reqs, SamplerSettings(temperature=1.0), is_done=lambda k, i: (k, i) in stored,
                               on_chunk=on_chunk, store_every=2)
    assert len(stored) == 10 and stats["generated"] == 9 and max(groups) <= 2


def test_report_groups_a_remote_model_by_its_name() -> None:
    from lekutils.report.labels import LabelTable, ModelLabel
    from lekutils.report.load import _model_id

    spec = "openai:mlx-community/gemma-3-27b@http://a:1/v1,http://b:2/v1#in_flight=2"
    assert _model_id(spec) == "openai:mlx-community/gemma-3-27b"
    assert _model_id({"spec": spec, "identity": "openai:mlx-community/gemma-3-27b"}) == "openai:mlx-community/gemma-3-27b"
    table = LabelTable([ModelLabel("g27", "Gemma 3 27B", match=["gemma-3-27b"])])
    assert table.lookup(_model_id(spec)).display == "Gemma 3 27B"
    assert LabelTable().lookup("openai:default_model").display == "openai:default_model"


CHILD = """
import sys
from lekutils.data.kernels import Condition
from lekutils.data.probes import Probe
from lekutils.engine.base import SamplerSettings
from lekutils.tasks.abtest import run_ab
probes = [Probe(f"P{i:02d}", "ethics", f"question {i}?", {}) for i in range(8)]
run_ab(sys.argv[1], probes, [Condition("baseline", None, None, None)], sys.argv[2], store_every=1,
       sampler=SamplerSettings(temperature=0.7), generator_options={"in_flight": 2, "retries": 0})
"""


@pytest.mark.faults
def test_client_kill9_mid_run_loses_nothing_stored(fakes, tmp_path: Path) -> None:
    """kill -9 of the generating process: every stored answer survives; the re-run asks only for the rest."""
    import os
    import signal
    import subprocess
    import sys

    f = fakes(delay=0.15)
    spec, out = f"openai:fake-model-1@{f.url}", tmp_path / "ab.jsonl"
    wp = work_path(out)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.Popen([sys.executable, "-c", CHILD, spec, str(out)], env=env)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (not wp.exists() or len(wp.read_text().splitlines()) < 3):
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = {(r["key"], r["sample_idx"]): r["response"] for r in map(json.loads, wp.read_text().splitlines())}
    assert 3 <= len(before) < 8 and not out.exists()
    f.requests.clear()
    s = run_ab(spec, [Probe(f"P{i:02d}", "ethics", f"question {i}?", {}) for i in range(8)],
               [Condition("baseline", None, None, None)], out, store_every=1,
               sampler=SamplerSettings(temperature=0.7), generator_options={"in_flight": 2})
    assert s["generated_this_run"] == 8 - len(before)
    assert len([b for b in f.requests if b["max_tokens"] != 1]) == 8 - len(before)
    after = [json.loads(x) for x in wp.read_text().splitlines()]
    assert len(after) == len({(r["key"], r["sample_idx"]) for r in after}) == 8
    assert all(before[(r["key"], r["sample_idx"])] == r["response"] for r in after if (r["key"], r["sample_idx"]) in before)


def test_a_failing_store_stops_new_requests(fakes) -> None:
    f = fakes(delay=0.05)
    gen = RemoteGenerator(f"openai:m@{f.url}", in_flight=1, **FAST)

    def on_result(res: Any) -> None:
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        gen.generate([GenerationRequest(f"k{i}", "q") for i in range(6)], SamplerSettings(), on_result=on_result)
    time.sleep(0.3)
    assert len(f.requests) <= 2
