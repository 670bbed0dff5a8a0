"""An already running OpenAI-compatible server (vLLM, SGLang, ...): nothing is started or stopped."""

from __future__ import annotations

import http.client
import json
import urllib.error
import urllib.request
from typing import Any

from pytest_rllm.engines.base import EngineContext, EngineDied, EngineStartError
from pytest_rllm.engines.identity import EngineIdentity, endpoint_identity
from pytest_rllm.engines.spec import EngineSpec
from pytest_rllm.telemetry.prometheus import MetricsScraper, ScrapedMetrics


def _http_get(url: str, api_key: str | None, timeout: float) -> tuple[int, bytes]:
    request = urllib.request.Request(url)
    if api_key:
        request.add_header("Authorization", f"Bearer {api_key}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()[:500]


def served_model_ids(url: str, *, api_key: str | None = None, timeout: float = 10.0) -> list[str]:
    """The model ids an OpenAI-compatible server lists at GET /v1/models, in its order.

    Raises EngineStartError, naming the fix, when the server is unreachable, wants a
    key, or does not answer like an OpenAI-compatible server.
    """
    base = url.rstrip("/")
    where = f"--rllm-endpoint={base}"
    try:
        status, body = _http_get(base + "/v1/models", api_key, timeout)
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        raise EngineStartError(
            f"{where} is unreachable ({getattr(exc, 'reason', exc)}). Start the server, or fix the URL."
        ) from None
    if status in (401, 403):
        raise EngineStartError(
            f"{where} refused the request with HTTP {status}: pass the key's environment variable "
            f"with --rllm-api-key-env=NAME."
        )
    if status != 200:
        raise EngineStartError(f"{where} answered GET /v1/models with HTTP {status}; is it an OpenAI-compatible server?")
    try:
        return [str(m["id"]) for m in json.loads(body)["data"]]
    except (ValueError, KeyError, TypeError):
        raise EngineStartError(
            f"{where} does not look like an OpenAI-compatible server: GET /v1/models did not return "
            f"{{'data': [{{'id': ...}}]}}."
        ) from None


def pick_served_model(served: list[str], wanted: str | None, where: str) -> str:
    """The model to test: `wanted` (--rllm-model) if the server serves it, else the first served id.

    A name the server does not serve is an error: testing another model instead would
    check the wrong model's results against the named one's baselines.
    """
    if not served:
        raise EngineStartError(f"{where} serves no model (GET /v1/models is empty).")
    if not wanted:
        return served[0]
    if wanted not in served:
        listed = ", ".join(repr(m) for m in served)
        raise EngineStartError(
            f"{where} does not serve --rllm-model={wanted!r}; GET /v1/models lists {listed}. "
            f"With --rllm-endpoint, --rllm-model is the name the server serves (vLLM's --served-model-name, "
            f"SGLang's model path): pass one of those, or leave --rllm-model out to test the first ({served[0]!r})."
        )
    return wanted


class ExternalEndpoint(EngineContext, ScrapedMetrics):
    def __init__(self, spec: EngineSpec, url: str, *, api_key: str | None = None, model: str | None = None) -> None:
        self.spec = spec
        self.base_url = url.rstrip("/")
        self._api_key = api_key  # never printed: info() and errors leave it out
        self._wanted_model = model or None
        self.served_model = model or ""  # the name requests carry; set from GET /v1/models by start()
        self.server_info: dict[str, Any] = {}
        self._scraper = MetricsScraper(self._fetch_metrics)

    def _get(self, path: str, timeout: float = 10.0) -> tuple[int, bytes]:
        return _http_get(self.base_url + path, self._api_key, timeout)

    def served_ids(self, timeout: float = 10.0) -> list[str]:
        """The ids of GET /v1/models, in the server's order; EngineStartError names the fix."""
        return served_model_ids(self.base_url, api_key=self._api_key, timeout=timeout)

    def start(self) -> None:
        models = self.served_ids()
        self.served_model = pick_served_model(models, self._wanted_model, f"--rllm-endpoint={self.base_url}")
        self.server_info = {"models": models}
        try:
            status, body = self._get("/version", timeout=5)
            # vLLM answers {"version": "0.32.0"}; other servers may answer 404, or something else.
            version = json.loads(body).get("version") if status == 200 else None
            if isinstance(version, (str, int, float)) and str(version).strip():
                self.server_info["version"] = str(version).strip()
        except (urllib.error.URLError, OSError, ValueError, AttributeError):
            pass

    def stop(self) -> None:
        """Nothing to stop: the endpoint belongs to the user."""

    def client(self, options: Any) -> Any:
        from pytest_rllm.client import ChatClient

        # Whether the server runs a reasoning parser is unknown: split only when its stream needs it.
        return ChatClient(self.base_url, self.served_model, options, api_key=self._api_key, split_thinking=None)

    def exited(self) -> bool:
        return False  # not ours to watch: check_alive asks it

    def process_groups(self) -> list[int] | None:
        return None  # it runs elsewhere: its CPU time is not this host's to count

    def check_alive(self) -> None:
        try:
            self._get("/v1/models", timeout=5)
        except (urllib.error.URLError, OSError) as exc:
            raise EngineDied(f"--rllm-endpoint={self.base_url} stopped answering: {exc}") from None

    def _fetch_metrics(self, query: str) -> str | None:
        try:
            status, body = self._get("/metrics" + query, timeout=5)
        except (urllib.error.URLError, OSError):
            return None
        return body.decode("utf-8", "replace") if status == 200 else None

    def identity(self) -> EngineIdentity:
        """What an external server tells: the version its GET /version reports; the rest is unknown."""
        return endpoint_identity(self.server_info.get("version"))

    def info(self) -> dict[str, Any]:
        version = self.server_info.get("version")
        return {
            "kind": "endpoint",
            "engine": f"external server{' ' + version if version else ''}",
            "identity": self.identity().to_dict(),
            "preset": self.spec.preset,
            "model": self.served_model,
            "url": self.base_url,
        }
