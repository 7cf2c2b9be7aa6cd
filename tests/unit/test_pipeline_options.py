"""The asyncio SDK clients' session: the environment's proxy is looked up once per client,
for its endpoint (NO_PROXY honoured), and never per request."""

from __future__ import annotations

import asyncio

import pytest

from dsmount.storage.azure.common import pipeline_options


def session_of(endpoint: str):
    async def make():
        options = pipeline_options(endpoint=endpoint, max_connections=4, attempt_timeout=5.0)
        transport = options["transport"]
        session = transport.session
        got = (session.trust_env, session._default_proxy)
        await session.close()
        return got

    return asyncio.run(make())


@pytest.fixture
def proxy_env(monkeypatch):
    for name in ("HTTPS_PROXY", "HTTP_PROXY", "NO_PROXY", "https_proxy", "http_proxy",
                 "no_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_no_proxy_in_the_environment(proxy_env):
    assert session_of("https://acct.blob.core.windows.net") == (False, None)


def test_proxy_from_the_environment_is_used(proxy_env):
    proxy_env.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    trust_env, proxy = session_of("https://acct.blob.core.windows.net")
    assert not trust_env  # no per-request lookup (nor ~/.netrc reads)
    assert str(proxy) == "http://proxy.example:3128"


def test_no_proxy_exempts_the_endpoint(proxy_env):
    proxy_env.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    proxy_env.setenv("NO_PROXY", "127.0.0.1,localhost")
    assert session_of("https://127.0.0.1:10000/devstoreaccount1") == (False, None)
    assert session_of("https://acct.blob.core.windows.net")[1] is not None
