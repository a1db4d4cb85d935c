"""The service in-process for the gateway tests, and clients bound to it (no sockets)."""

import httpx
from fastapi.testclient import TestClient
from tierwise.gateway.client import AsyncTierwiseClient, TierwiseClient

# A request per tier for the tiny model of tools/tiny_model.py.
PROMPTS = {"fast": "hello hello", "balanced": "write an email", "frontier": "prove the theorem"}


def async_client(app: tuple, **kwargs: object) -> AsyncTierwiseClient:
    """An async client whose requests go straight to the app (httpx's ASGI transport)."""
    return AsyncTierwiseClient("http://tierwise", transport=httpx.ASGITransport(app=app[0]), **kwargs)


def sync_client(app: tuple[object, TestClient], **kwargs: object) -> TierwiseClient:
    client = TierwiseClient("http://testserver", **kwargs)
    client._http = app[1]  # the TestClient is an httpx.Client bound to the app
    return client


def refused_transport() -> httpx.MockTransport:
    """A transport whose every request fails as a refused connection does (tierwise is down)."""

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused")

    return httpx.MockTransport(refuse)
