"""Remote generation on OpenAI-compatible chat-completions servers (mlx_lm.server, llama.cpp's
llama-server, vLLM, Ollama), behind the same :class:`~lekutils.engine.base.Generator` interface as
the local engine.

Spec: ``openai:<model>@<base_url>[,<base_url>...][#option=value&...]``, e.g.
``openai:default_model@http://127.0.0.1:8080/v1`` or, spread over two machines,
``openai:gemma-3-27b@http://10.0.0.1:8080/v1,http://10.0.0.2:8080/v1#in_flight=2``.
``<model>`` is the name sent in each request's ``model`` field (``default_model`` is the model an
``mlx_lm.server`` was started with). Options (:class:`RemoteOptions`) come from the spec's
``#`` part and from keyword arguments of :func:`lekutils.engine.factory.open_generator` (which win).

Each (prompt, sample) is one request, sent to the endpoint with the fewest requests in flight
(failing endpoints are skipped for a while, and their work goes to the others). With ``temperature
> 0`` each request carries ``seed = sample_seed(seed, key, sample_idx)``, so a sample is the same
whichever endpoint, batch or run made it (servers' ``n`` is not used: a resumed run asks for
single samples). Greedy requests carry no seed (mlx_lm.server batches only seedless requests).
Retries with exponential backoff on 429, 5xx, timeouts, connection errors and malformed
responses; other 4xx fail at once. The API key is read from the environment variable named by
``api_key_env`` and never stored: records and fingerprints carry endpoint names (host:port/path)
and that variable's name only.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, fields
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from lekutils.engine.base import GenerationRequest, GenerationResult, SamplerSettings, sample_seed
from lekutils.engine.models.specs import ModelSpecError

__all__ = ["PREFIX", "RemoteError", "RemoteGenerator", "RemoteOptions", "RemoteSpec", "endpoint_name",
           "fingerprint", "is_remote", "model_id", "parse_spec"]

log = logging.getLogger(__name__)

PREFIX = "openai:"
#: ``prompt_format`` of remote records: the server applied its own chat template.
PROMPT_FORMAT = "server"
FORM = "openai:<model>@<base_url>[,<base_url>...][#option=value&...], e.g. openai:default_model@http://127.0.0.1:8080/v1"


class RemoteError(RuntimeError):
    """A remote request that failed for good; names the endpoint and what happened."""


@dataclass(frozen=True)
class RemoteOptions:
    """How requests are sent. Every field can be given in the spec (``#in_flight=4``) or as a keyword.

    ``in_flight``: requests in flight per endpoint. ``timeout_s``: seconds to wait for one answer
    (``connect_timeout_s`` to connect). ``retries``: further attempts of a request after a retryable
    failure (429, 5xx, timeout, connection error, malformed response), waiting ``backoff_s`` x 2^k
    (at most ``backoff_max_s``, or the server's ``Retry-After``). ``down_s``: how long an endpoint
    that failed to connect is skipped (doubling while it keeps failing, at most ``backoff_max_s``).
    ``api_key_env``: the environment variable holding the API key (sent as a bearer token).
    ``seed_greedy``: also send the seed when ``temperature == 0``. ``system_role``: false where the
    server's chat template has no system role (Gemma: ``mlx_lm.server`` answers 404): the system text
    (kernel) is then folded into the first user turn, ``system + "\n\n" + user``, as the local engine
    does (records' ``prompt_format`` is ``folded``).
    """

    in_flight: int = 4
    timeout_s: float = 600.0
    connect_timeout_s: float = 10.0
    retries: int = 4
    backoff_s: float = 1.0
    backoff_max_s: float = 60.0
    down_s: float = 2.0
    api_key_env: str | None = None
    seed_greedy: bool = False
    system_role: bool = True

    def __post_init__(self) -> None:
        if self.in_flight < 1:
            raise ValueError(f"in_flight must be >= 1, got {self.in_flight}")
        if self.retries < 0:
            raise ValueError(f"retries must be >= 0, got {self.retries}")
        for name in ("timeout_s", "connect_timeout_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        for name in ("backoff_s", "backoff_max_s", "down_s"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], where: str = "options") -> RemoteOptions:
        """Options from strings (a spec's ``#`` part) or typed values; unknown names are an error."""
        types = {f.name: f.type for f in fields(cls)}
        unknown = sorted(set(values) - set(types))
        if unknown:
            raise ValueError(f"{where}: unknown remote option(s) {unknown}; known: {sorted(types)}")
        out: dict[str, Any] = {}
        for k, v in values.items():
            t = str(types[k])
            try:
                if isinstance(v, str) and "bool" in t:
                    if v.lower() not in ("1", "0", "true", "false", "yes", "no"):
                        raise ValueError(v)
                    v = v.lower() in ("1", "true", "yes")
                elif isinstance(v, str) and t.startswith("int"):
                    v = int(v)
                elif isinstance(v, (str, int)) and t.startswith("float"):
                    v = float(v)
            except ValueError:
                raise ValueError(f"{where}: remote option {k}={v!r} is not a valid {t}") from None
            out[k] = v
        return cls(**out)


@dataclass(frozen=True)
class RemoteSpec:
    """A parsed remote spec: the requested model name, its endpoints' base URLs, the spec's options."""

    spec: str
    model: str
    base_urls: tuple[str, ...]
    options: Mapping[str, str]

    @property
    def endpoints(self) -> list[str]:
        return [endpoint_name(u) for u in self.base_urls]


def is_remote(spec: Any) -> bool:
    """Whether ``spec`` is a remote (``openai:``) model spec."""
    return isinstance(spec, str) and spec.strip().startswith(PREFIX)


def _spec_error(spec: str, why: str) -> ModelSpecError:
    return ModelSpecError(f"model spec {spec!r}: {why}. Remote form: {FORM}")


def parse_spec(spec: str) -> RemoteSpec:
    """Parse ``openai:<model>@<url>[,<url>...][#opts]``; :class:`ModelSpecError` says what is wrong."""
    s = spec.strip()
    if not s.startswith(PREFIX):
        raise _spec_error(spec, f"does not start with {PREFIX!r}")
    body, _, frag = s[len(PREFIX):].partition("#")
    at = min((i for i in (body.find("@http://"), body.find("@https://")) if i >= 0), default=-1)
    if at < 0:
        raise _spec_error(spec, "needs '@' and at least one http:// or https:// base URL")
    model, urls = body[:at].strip(), [u.strip().rstrip("/") for u in body[at + 1:].split(",")]
    if not model:
        raise _spec_error(spec, "the model name before '@' is empty")
    for u in urls:
        parts = urlsplit(u)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise _spec_error(spec, f"{u!r} is not an http(s) base URL")
        if parts.username or parts.password:
            raise _spec_error(spec, f"{endpoint_name(u)}: no credentials in URLs; name the API key's environment "
                                    "variable with the option api_key_env")
        if parts.query or parts.fragment:
            raise _spec_error(spec, f"{endpoint_name(u)}: a base URL takes no query")
    if len(set(urls)) != len(urls):
        raise _spec_error(spec, "a base URL is listed twice")
    try:
        opts = dict(parse_qsl(frag, keep_blank_values=True, strict_parsing=bool(frag)))
        RemoteOptions.from_mapping(opts, where=f"model spec {spec!r}")
    except ValueError as e:
        raise _spec_error(spec, str(e)) from None
    return RemoteSpec(s, model, tuple(urls), opts)


def endpoint_name(base_url: str) -> str:
    """The name of an endpoint in records and manifests: ``host:port/path`` (no scheme, credentials or query)."""
    p = urlsplit(base_url)
    host = p.hostname or ""
    port = f":{p.port}" if p.port else ""
    return f"{host}{port}{p.path.rstrip('/')}"


def model_id(spec: str) -> str:
    """What identifies a remote model across endpoints and options: ``openai:<model>`` (the content
    key and the report use it, so adding or moving endpoints regenerates nothing)."""
    return PREFIX + parse_spec(spec).model


def _api_key(options: RemoteOptions) -> str | None:
    if not options.api_key_env:
        return None
    key = os.environ.get(options.api_key_env)
    if not key:
        raise RemoteError(f"the API key variable {options.api_key_env} (option api_key_env) is not set or empty")
    return key


def _headers(options: RemoteOptions) -> dict[str, str]:
    key = _api_key(options)
    return {"Authorization": f"Bearer {key}"} if key else {}


def _server_models(client: Any, base_url: str, headers: Mapping[str, str]) -> list[str] | None:
    """Model ids a server lists at ``/models`` (None when it lists none or cannot)."""
    try:
        r = client.get(f"{base_url}/models", headers=dict(headers))
        data = r.json().get("data") if r.status_code == 200 else None
        ids = [str(m["id"]) for m in data if isinstance(m, dict) and m.get("id")] if isinstance(data, list) else []
        return ids or None
    except Exception:  # noqa: BLE001 - best effort: any failure means "not listed"
        return None


def fingerprint(spec: str, *, timeout_s: float = 5.0, probe: bool = True) -> dict[str, Any]:
    """A remote model's reference for manifests and records: the spec, ``identity`` (``openai:<model>``,
    what the content key uses), the endpoint names and, per endpoint, the server-reported model id
    (from ``/models`` where the server lists the requested model, else from a 1-token request when
    ``probe``). Never the API key; unreachable endpoints are recorded as such."""
    import httpx

    rs = parse_spec(spec)
    opts = RemoteOptions.from_mapping(rs.options)
    out: dict[str, Any] = {"spec": rs.spec, "kind": "openai", "name": rs.model, "identity": model_id(spec),
                           "endpoints": rs.endpoints, "api_key_env": opts.api_key_env, "path": None,
                           "sha256": None, "size": None, "server_models": {}}
    try:
        headers = _headers(opts)
    except RemoteError as e:
        out["error"] = str(e)
        return out
    with httpx.Client(timeout=httpx.Timeout(timeout_s, connect=min(timeout_s, 3.0)), trust_env=False) as client:
        for url in rs.base_urls:
            name = endpoint_name(url)
            listed = _server_models(client, url, headers)
            if listed and rs.model in listed:
                out["server_models"][name] = rs.model
                continue
            if not probe:
                out["server_models"][name] = None
                continue
            body = {"model": rs.model, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1,
                    "temperature": 0.0}
            try:
                r = client.post(f"{url}/chat/completions", json=body, headers=headers)
                out["server_models"][name] = str(r.json()["model"]) if r.status_code == 200 else None
                if r.status_code != 200:
                    out.setdefault("unreachable", {})[name] = f"HTTP {r.status_code}"
            except Exception as e:  # noqa: BLE001 - recorded: a manifest must not fail on a down server
                out["server_models"][name] = None
                out.setdefault("unreachable", {})[name] = type(e).__name__
    return out


class _Endpoint:
    def __init__(self, base_url: str):
        self.base_url = base_url
        self.name = endpoint_name(base_url)
        self.in_flight = 0
        self.down_until = 0.0
        self.failures = 0  # consecutive connection failures
        self.done = 0
        self.errors = 0


class _Retry(Exception):
    """A retryable failure of one attempt (``wait_s``: the server's Retry-After, if any)."""

    def __init__(self, message: str, wait_s: float | None = None):
        super().__init__(message)
        self.wait_s = wait_s


class _Stopped(Exception):
    """The batch was abandoned (another request failed for good)."""


class RemoteGenerator:
    """A :class:`~lekutils.engine.base.Generator` over one or more OpenAI-compatible endpoints.

    ``batch_size`` is the chunk of work :func:`~lekutils.engine.base.generate_resumable` hands over
    at a time (at least the requests in flight, so every endpoint stays busy); ``stats`` counts
    requests, retries and results per endpoint.
    """

    def __init__(self, spec: str, *, batch_size: int = 16, **options: Any):
        self.spec = parse_spec(spec)
        self.options = RemoteOptions.from_mapping({**self.spec.options, **options}, where=f"model spec {spec!r}")
        self._headers = _headers(self.options)  # a missing key variable fails now, not per request
        self.endpoints = [_Endpoint(u) for u in self.spec.base_urls]
        self.capacity = self.options.in_flight * len(self.endpoints)
        self.batch_size = max(int(batch_size), self.capacity)
        self.model_spec = self.spec.spec
        self.server_models: dict[str, str] = {}
        self.stats: dict[str, Any] = {"requests": 0, "retries": 0, "failovers": 0}
        self._cond = threading.Condition()
        self._client: Any = None

    # -- plumbing ---------------------------------------------------------------------------------
    def _http(self) -> Any:
        import httpx

        if self._client is None:
            o = self.options
            self._client = httpx.Client(
                timeout=httpx.Timeout(o.timeout_s, connect=o.connect_timeout_s), trust_env=False,
                limits=httpx.Limits(max_connections=self.capacity, max_keepalive_connections=self.capacity))
        return self._client

    def close(self) -> None:
        """Close the HTTP connections (they are reopened on the next request)."""
        if self._client is not None:
            self._client.close()
            self._client = None

    def _acquire(self, stop: threading.Event, avoid: _Endpoint | None = None) -> _Endpoint:
        """The endpoint with the fewest requests in flight among those up and not full (waits)."""
        with self._cond:
            while True:
                if stop.is_set():
                    raise _Stopped()
                now = time.monotonic()
                up = [e for e in self.endpoints if e.down_until <= now and e.in_flight < self.options.in_flight]
                if avoid is not None and len(up) > 1:
                    up = [e for e in up if e is not avoid] or up
                if up:
                    ep = min(up, key=lambda e: (e.in_flight, e.done))
                    ep.in_flight += 1
                    return ep
                soonest = min((e.down_until for e in self.endpoints if e.down_until > now), default=now + 1.0)
                self._cond.wait(timeout=max(0.01, min(soonest - now, 1.0)))

    def _release(self, ep: _Endpoint, *, ok: bool | None) -> None:
        with self._cond:
            ep.in_flight -= 1
            if ok:
                ep.failures, ep.down_until = 0, 0.0
                ep.done += 1
            elif ok is False:  # could not connect: skip it for a while, its work goes elsewhere
                ep.failures += 1
                ep.errors += 1
                ep.down_until = time.monotonic() + min(self.options.down_s * 2 ** (ep.failures - 1),
                                                       self.options.backoff_max_s)
            self._cond.notify_all()

    def _format(self, req: GenerationRequest) -> str:
        """The records' ``prompt_format``: the server's template, or the kernel folded into the user turn."""
        return PROMPT_FORMAT if self.options.system_role or req.system is None else "folded"

    def _body(self, req: GenerationRequest, sampler: SamplerSettings, seed: int) -> dict[str, Any]:
        messages: list[dict[str, str]] = [{"role": m["role"], "content": m["content"]} for m in req.messages]
        messages.append({"role": "user", "content": req.user})
        if req.system is not None and self.options.system_role:
            messages.insert(0, {"role": "system", "content": req.system})
        elif req.system is not None:  # no system role: the kernel opens the first user turn
            messages[0] = {"role": "user", "content": f"{req.system}\n\n{messages[0]['content']}"}
        body: dict[str, Any] = {"model": self.spec.model, "messages": messages, "max_tokens": sampler.max_tokens,
                                "temperature": sampler.temperature, "top_p": sampler.top_p, "stream": False}
        if sampler.temperature > 0 or self.options.seed_greedy:
            body["seed"] = seed
        return body

    def _parse(self, ep: _Endpoint, data: Any) -> tuple[str, str, int, int, str]:
        """(text, finish_reason, prompt tokens, completion tokens, model id) of a response, or _Retry naming what is wrong."""
        try:
            choice = data["choices"][0]
            text = choice["message"]["content"]
            if not isinstance(text, str):
                raise TypeError("message.content is not a string")
            finish = choice.get("finish_reason") or "stop"
            usage = data.get("usage") or {}
            pt, ct = usage.get("prompt_tokens"), usage.get("completion_tokens")
            pt = int(pt) if pt is not None else -1
            ct = int(ct) if ct is not None else -1
            model = str(data.get("model") or self.spec.model)
        except (KeyError, IndexError, TypeError, ValueError, AttributeError) as e:
            raise _Retry(f"malformed response from {ep.name}: {type(e).__name__}: {e}") from None
        return text, ("length" if finish == "length" else "stop"), pt, ct, model

    def _one(self, req: GenerationRequest, sample_idx: int, sampler: SamplerSettings,
             stop: threading.Event) -> GenerationResult:
        """One sample, with retries and failover."""
        import httpx

        seed = sample_seed(sampler.seed, req.key, sample_idx)
        body = self._body(req, sampler, seed)
        o = self.options
        attempt, last, prev = 0, "", None
        while True:
            ep = self._acquire(stop, avoid=prev)
            if prev is not None and ep is not prev:
                with self._cond:
                    self.stats["failovers"] += 1
            t0 = time.monotonic()
            ok: bool | None = None
            wait_s = None
            try:
                with self._cond:
                    self.stats["requests"] += 1
                r = self._http().post(f"{ep.base_url}/chat/completions", json=body, headers=self._headers)
                if r.status_code == 429 or r.status_code >= 500:
                    ra = r.headers.get("retry-after")
                    wait_s = float(ra) if ra and ra.replace(".", "", 1).isdigit() else None
                    raise _Retry(f"{ep.name}: HTTP {r.status_code}: {r.text[:200]}", wait_s)
                if r.status_code >= 400:
                    ok = True  # the endpoint answers; the request is wrong
                    raise RemoteError(f"{ep.name}: HTTP {r.status_code} for model {self.spec.model!r} "
                                      f"(request {req.key!r}, sample {sample_idx}): {r.text[:500]}")
                try:
                    data = r.json()
                except ValueError:
                    raise _Retry(f"malformed response from {ep.name}: not JSON: {r.text[:120]!r}") from None
                text, finish, pt, ct, model = self._parse(ep, data)
                ok = True
                dt = time.monotonic() - t0
                with self._cond:
                    self.server_models[ep.name] = model
                return GenerationResult(
                    key=req.key, sample_idx=sample_idx, text=text, prompt_tokens=pt, generation_tokens=ct,
                    finish_reason=finish, prompt_format=self._format(req), time_s=dt, prefill_s=0.0, decode_s=dt,
                    sampler=sampler.to_dict(), seed=seed, model=model, endpoint=ep.name)
            except _Retry as e:
                ok, last, wait_s = None, str(e), e.wait_s
            except httpx.TimeoutException as e:
                ok, last = None, f"{ep.name}: timed out ({type(e).__name__})"
            except httpx.TransportError as e:  # refused, reset, closed mid-answer: the endpoint is down
                ok, last = False, f"{ep.name}: {type(e).__name__}: {e}"
            finally:
                self._release(ep, ok=ok)
            attempt += 1
            if attempt > o.retries:
                raise RemoteError(f"request {req.key!r} sample {sample_idx} failed after {attempt} attempt(s) on "
                                  f"{', '.join(e.name for e in self.endpoints)}; last error: {last}")
            with self._cond:
                self.stats["retries"] += 1
            log.warning("retrying %r/%d (attempt %d of %d): %s", req.key, sample_idx, attempt + 1, o.retries + 1, last)
            prev = ep
            others_up = any(e is not ep and e.down_until <= time.monotonic() for e in self.endpoints)
            delay = wait_s if wait_s is not None else min(o.backoff_s * 2 ** (attempt - 1), o.backoff_max_s)
            if not (others_up and ok is False) and stop.wait(delay * (0.75 + 0.5 * random.random())):
                raise _Stopped()

    # -- the Generator interface ------------------------------------------------------------------
    def check(self, requests: Sequence[GenerationRequest], sampler: SamplerSettings) -> None:
        """Requests must be well formed; at least one endpoint must answer (any HTTP status but 401/403)."""
        import httpx

        bad = [r.key for r in requests if not isinstance(r.user, str) or not r.user]
        if bad:
            raise ValueError(f"{len(bad)} request(s) with an empty user text: {bad[:10]}")
        errors, reachable = [], 0
        for ep in self.endpoints:
            try:
                r = self._http().get(f"{ep.base_url}/models", headers=self._headers,
                                     timeout=min(self.options.connect_timeout_s + 5.0, self.options.timeout_s))
            except httpx.HTTPError as e:
                errors.append(f"{ep.name}: {type(e).__name__}")
                self._release_down(ep)
                continue
            if r.status_code in (401, 403):
                raise RemoteError(f"{ep.name}: HTTP {r.status_code}: the server refused the API key "
                                  f"({'from ' + self.options.api_key_env if self.options.api_key_env else 'none sent'})")
            reachable += 1
        if not reachable:
            raise RemoteError(f"no endpoint of {self.spec.model!r} answers: {'; '.join(errors)}")
        for e in errors:
            log.warning("endpoint down, its work goes to the others: %s", e)

    def _stop(self, stop: threading.Event) -> None:
        stop.set()
        with self._cond:
            self._cond.notify_all()

    def _release_down(self, ep: _Endpoint) -> None:
        with self._cond:
            ep.in_flight += 1
        self._release(ep, ok=False)

    def generate(self, requests: Sequence[GenerationRequest], sampler: SamplerSettings,
                 progress: Callable[[int], None] | None = None, *, only: set[tuple[str, int]] | None = None,
                 on_result: Callable[[GenerationResult], None] | None = None) -> list[GenerationResult]:
        """Every (request, sample) in ``only`` (default: all), ``capacity`` requests in flight.

        ``on_result`` gets each result in the calling thread as it arrives. When a request fails for
        good, no new request starts, the ones in flight are finished and reported, and the first
        :class:`RemoteError` is raised.
        """
        items = [(r, s) for r in requests for s in range(r.n_samples) if only is None or (r.key, s) in only]
        results: dict[tuple[str, int], GenerationResult] = {}
        if not items:
            return []
        stop = threading.Event()
        error: BaseException | None = None
        pool = ThreadPoolExecutor(max_workers=min(self.capacity, len(items)), thread_name_prefix="lek-remote")
        pending: set[Future[GenerationResult]] = {pool.submit(self._one, r, s, sampler, stop) for r, s in items}
        try:
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for f in done:
                    try:
                        res = f.result()
                    except _Stopped:
                        continue
                    except Exception as e:  # noqa: BLE001 - the first failure is re-raised below
                        if error is None:
                            error = e
                            self._stop(stop)
                        continue
                    results[(res.key, res.sample_idx)] = res
                    if on_result is not None:
                        on_result(res)
                    if progress is not None:
                        progress(1)
        except BaseException:  # the caller's callback failed, or an interrupt: start nothing, wait for nothing
            self._stop(stop)
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        pool.shutdown(wait=True)
        if error is not None:
            raise error
        return [results[(r.key, s)] for r, s in items]
