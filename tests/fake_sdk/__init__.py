"""A third-party SDK as meshprop finds it in a real service: code that never imports meshprop
and makes its own clients, some of them when it is imported."""

from __future__ import annotations

import urllib.request
from typing import Any

import httpx
import requests
import urllib3

# Made at import time, before instrument() may have run.
_shared_httpx = httpx.Client(follow_redirects=True)
_shared_session = requests.Session()
_shared_session.trust_env = False
_shared_pool = urllib3.PoolManager()


def httpx_get(url: str) -> int:
    return _shared_httpx.get(url).status_code


def httpx_get_new_client(url: str) -> int:
    with httpx.Client(follow_redirects=True) as client:
        return client.get(url).status_code


async def httpx_get_async(url: str) -> int:
    async with httpx.AsyncClient(follow_redirects=True) as client:
        return (await client.get(url)).status_code


def requests_get(url: str) -> int:
    return _shared_session.get(url).status_code


def requests_get_module(url: str) -> int:
    return requests.get(url, proxies={"http": "", "https": ""}).status_code


def urllib3_get(url: str) -> int:
    return _shared_pool.request("GET", url).status


def urllib_get(url: str) -> int:
    handler = urllib.request.ProxyHandler({})
    with urllib.request.build_opener(handler).open(url) as response:
        status: int = response.status
        return status


async def aiohttp_get(url: str) -> int:
    import aiohttp

    async with aiohttp.ClientSession(trust_env=False) as session, session.get(url) as response:
        return response.status


CALLS: dict[str, Any] = {
    "httpx shared client": httpx_get,
    "httpx new client": httpx_get_new_client,
    "requests shared session": requests_get,
    "requests.get": requests_get_module,
    "urllib3 PoolManager": urllib3_get,
    "urllib.request": urllib_get,
}
ASYNC_CALLS: dict[str, Any] = {"httpx AsyncClient": httpx_get_async, "aiohttp": aiohttp_get}
