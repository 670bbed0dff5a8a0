"""An already running OpenAI-compatible server (vLLM, SGLang, ...): nothing is started or stopped."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from pytest_rllm.engines.base import EngineDied, EngineStartError
from pytest_rllm.engines.identity import EngineIdentity, endpoint_identity
from pytest_rllm.engines.spec import EngineSpec
from pytest_rllm.telemetry.prometheus import MetricsScraper, ScrapedMetrics


class ExternalEndpoint(ScrapedMetrics):
    def __init__(self, spec: EngineSpec, url: str, *, api_key: str | None = None, model: str | None = None) -> None:
        self.spec = spec
        self.base_url = url.rstrip("/")
        self._api_key = api_key  # never printed: info() and errors leave it out
        self._wanted_model = model
        self.served_model = model or ""
        self.server_info: dict[str, Any] = {}
        self._scraper = MetricsScraper(self._fetch_metrics)

    def _get(self, path: str, timeout: float = 10.0) -> tuple[int, bytes]:
        request = urllib.request.Request(self.base_url + path)
        if self._api_key:
            request.add_header("Authorization", f"Bearer {self._api_key}")
        try:
            with urllib.request.urlopen(request, timeout=timeout) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()[:500]

    def start(self) -> None:
        where = f"--rllm-endpoint={self.base_url}"
        try:
            status, body = self._get("/v1/models")
        except (urllib.error.URLError, OSError) as exc:
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
            models = [m["id"] for m in json.loads(body)["data"]]
        except (ValueError, KeyError, TypeError):
            raise EngineStartError(
                f"{where} does not look like an OpenAI-compatible server: GET /v1/models did not return "
                f"{{'data': [{{'id': ...}}]}}."
            ) from None
        if not models:
            raise EngineStartError(f"{where} serves no model (GET /v1/models is empty).")
        if self._wanted_model and self._wanted_model not in models:
            # Users often pass the hub id while the server names it differently: use what it serves.
            self.served_model = models[0]
        else:
            self.served_model = self._wanted_model or models[0]
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
