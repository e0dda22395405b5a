"""A small client for an OpenAI-compatible server (``tunelab serve``, vLLM, llama.cpp's server, Ollama).

Shared by the evaluation package's URL models and the red-team's URL targets: the base URL
(with or without ``/v1``), the bearer key, transport errors turned into one clear ``ServeError``,
and the first model a server lists when the caller named none.
"""

from __future__ import annotations

from tunelab.errors import ServeError


class OpenAIClient:
    """``request`` and ``first_model`` against ``{base}/v1/...``; ``base`` drops a trailing ``/v1``."""

    def __init__(self, url: str, *, api_key: str | None = None, timeout: float = 300.0):
        import httpx

        self.base = url.rstrip("/").removesuffix("/v1")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.http = httpx.Client(base_url=self.base, headers=headers, timeout=timeout)

    def request(self, method: str, path: str, **kwargs):
        import httpx

        try:
            return self.http.request(method, path, **kwargs)
        except httpx.HTTPError as err:
            raise ServeError(
                f"{self.base}{path}: {err}\n  fix: start the server (tunelab serve MODEL) or check the URL and port"
            ) from err

    def first_model(self, fix: str) -> str:
        """The first id of ``GET /v1/models``; ``fix`` says how to name one when the server lists none."""
        response = self.request("GET", "/v1/models")
        if response.status_code != 200 or not response.json().get("data"):
            raise ServeError(
                f"{self.base}/v1/models answered {response.status_code}: {response.text[:200]}\n  fix: {fix}"
            )
        return response.json()["data"][0]["id"]

    def close(self) -> None:
        self.http.close()
