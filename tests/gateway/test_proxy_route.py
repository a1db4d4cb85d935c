"""The route (segment) the LiteLLM proxy hook sends for a request: the caller's metadata, else the
virtual key's team, else the key (tierwise.gateway.litellm_request.proxy_route)."""

import hashlib
from types import SimpleNamespace

import pytest
from tierwise.gateway.litellm_request import proxy_route

KEY_K1 = "key:" + hashlib.sha256(b"k1").hexdigest()[:12]


@pytest.mark.parametrize(
    ("metadata", "key", "route"),
    [
        ({"tierwise_route": "checkout"}, SimpleNamespace(team_alias="shop", key_alias="k1"), "checkout"),
        ({}, SimpleNamespace(team_alias="shop", team_id="t-1", key_alias="k1"), "team:shop"),
        (None, SimpleNamespace(team_alias=None, team_id="t-1", key_alias="k1"), "team:t-1"),
        ({"tierwise_route": ""}, SimpleNamespace(team_alias=None, team_id=None, key_alias="k1"), KEY_K1),
        ({}, SimpleNamespace(), None),
        ({}, None, None),
        ("not a mapping", SimpleNamespace(key_alias="k1"), KEY_K1),
    ],
)
def test_the_route_is_the_callers_else_its_team_else_its_key(metadata, key, route):
    assert proxy_route(metadata, key) == route


def test_a_key_alias_is_never_sent_as_it_is():
    route = proxy_route({}, SimpleNamespace(key_alias="jane.doe@example.com"))
    assert route is not None and route.startswith("key:") and "jane" not in route and len(route) == 16


def test_a_long_team_alias_is_cut_to_the_route_limit():
    assert len(proxy_route({}, SimpleNamespace(team_alias="t" * 500)) or "") == 200
