"""The environment's proxy, looked up once per client (not per request, as aiohttp's
trust_env would)."""

from __future__ import annotations

import pytest

from dsmount.storage.azure.common import env_proxy


@pytest.fixture(autouse=True)
def no_proxy_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("HTTPS_PROXY", "HTTP_PROXY", "NO_PROXY", "https_proxy", "http_proxy",
                "no_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)


def test_no_proxy_configured() -> None:
    assert env_proxy("https://acct.blob.core.windows.net") is None


def test_https_proxy_for_an_https_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.corp:3128")
    assert env_proxy("https://acct.blob.core.windows.net") == "http://proxy.corp:3128"
    # An http endpoint (an emulator) takes HTTP_PROXY, which is not set.
    assert env_proxy("http://127.0.0.1:10000/devstoreaccount1") is None


def test_no_proxy_is_honoured(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.corp:3128")
    monkeypatch.setenv("NO_PROXY", ".core.windows.net,localhost")
    assert env_proxy("https://acct.blob.core.windows.net") is None
    assert env_proxy("https://acct.blob.core.chinacloudapi.cn") == "http://proxy.corp:3128"


def test_the_client_options_carry_the_proxy_and_aiohttp_does_not_look_it_up(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import asyncio

    from dsmount.storage.azure.common import pipeline_options

    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.corp:3128")

    async def build(endpoint: str) -> tuple[dict, bool]:
        options = pipeline_options(max_connections=4, attempt_timeout=5.0, endpoint=endpoint)
        transport = options["transport"]
        trust_env = transport.session.trust_env
        await transport.session.close()
        return options, trust_env

    options, trust_env = asyncio.run(build("https://acct.blob.core.windows.net"))
    assert options["proxies"] == {"http": "http://proxy.corp:3128", "https": "http://proxy.corp:3128"}
    assert trust_env is False
    options, _ = asyncio.run(build("http://127.0.0.1:10000/devstoreaccount1"))
    assert "proxies" not in options
