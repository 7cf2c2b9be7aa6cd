"""What the REST clients of a container (`blob_client`) and of a share (`fileshare_client`)
share: the SDK client made lazily on the asyncio loop, the lean pipeline our raw requests go
through (`common.lean_pipeline`), sending one request, reading its whole answer, and closing.

Invariants: every method runs ON THE ASYNCIO LOOP; nothing here retries or maps errors (the
backend's `_call` does); a request body larger than `StreamedBody.CHUNK` is streamed, never
handed to the transport whole.
"""

from __future__ import annotations

from typing import Any

from dsmount.storage.azure.common import AzureTarget, StreamedBody, lean_pipeline


class AzureRest:
    """One SDK client's raw requests. Subclasses make the client (`_make_client`), say where a
    path lives (`url`) and which headers every request carries (`_service_headers`)."""

    def __init__(self, target: AzureTarget, *, max_connections: int, attempt_timeout: float
                 ) -> None:
        self.target = target
        self.max_connections = max_connections
        self.attempt_timeout = attempt_timeout
        self._client: Any = None  # the SDK client, made on the asyncio loop
        self._lean: Any = None  # its lean pipeline for our raw requests
        self._token_credential: Any = None

    def _make_client(self) -> Any:
        raise NotImplementedError

    def _service_headers(self, headers: dict[str, str]) -> None:
        """Add the headers every request of this service carries."""

    def _count(self) -> None:
        """Called once per request sent (the blob client counts there)."""

    def url(self, path: str) -> str:
        raise NotImplementedError

    def client(self) -> Any:
        """The SDK client, created on first use ON THE ASYNCIO LOOP (aiohttp needs it)."""
        if self._client is None:
            self._client = self._make_client()
        return self._client

    @property
    def opened(self) -> bool:
        return self._client is not None or self._token_credential is not None

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
        if self._token_credential is not None:
            await self._token_credential.close()

    async def send(
        self,
        method: str,
        url: str,
        headers: dict[str, str],
        params: Any = None,
        content: Any = None,
    ) -> Any:
        from azure.core.rest import HttpRequest

        client = self.client()
        headers["x-ms-version"] = client.api_version
        self._service_headers(headers)
        request = HttpRequest(method, url, headers=headers, params=params, content=content)
        self._count()
        # stream=True: with stream=False the pipeline's ContentDecodePolicy would also decode
        # the body by its Content-Type (XML into a tree, a file's bytes into text).
        if self._lean is None:
            self._lean = lean_pipeline(client)
        return (await self._lean.run(request, stream=True)).http_response

    async def request(
        self, method: str, path: str, headers: dict[str, str], params: Any = None,
        content: bytes | bytearray | memoryview | None = None,
    ) -> tuple[int, Any, bytes]:
        """(status, response, whole body) of one request on `path` (see `url`)."""
        body: Any = content
        if content is None and method == "PUT":
            headers["Content-Length"] = "0"
        elif content is not None:
            # Both are signed by the SDK's policy: the transport must not add its own after
            # (and azure-core sets Content-Length itself only for bytes).
            headers.setdefault("Content-Type", "application/octet-stream")
            headers["Content-Length"] = str(len(content))
            if len(content) > StreamedBody.CHUNK:
                body = StreamedBody(content)
        response = await self.send(method, self.url(path), headers, params, body)
        try:
            body = await response.read()
            return response.status_code, response, body
        finally:
            await response.close()
