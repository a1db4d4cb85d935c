"""The route (segment) the LiteLLM proxy hook sends for a request: the caller's metadata, else the
virtual key's team, else the key (tierwise.gateway.litellm_request.proxy_route)."""

from types import SimpleNamespace

import pytest
from tierwise.gateway.litellm_request import proxy_route


@pytest.mark.parametrize(
    ("metadata", "key", "route"),
    [
        ({"tierwise_route": "checkout"}, SimpleNamespace(team_alias="shop", key_alias="k1"), "checkout"),
        ({}, SimpleNamespace(team_alias="shop", team_id="t-1", key_alias="k1"), "team:shop"),
        (None, SimpleNamespace(team_alias=None, team_id="t-1", key_alias="k1"), "team:t-1"),
        ({"tierwise_route": ""}, SimpleNamespace(team_alias=None, team_id=None, key_alias="k1"), "key:k1"),
        ({}, SimpleNamespace(), None),
        ({}, None, None),
        ("not a mapping", SimpleNamespace(key_alias="k1"), "key:k1"),
    ],
)
def test_the_route_is_the_callers_else_its_team_else_its_key(metadata, key, route):
    assert proxy_route(metadata, key) == route


def test_a_long_alias_is_cut_to_the_route_limit():
    assert len(proxy_route({}, SimpleNamespace(key_alias="k" * 500)) or "") == 200
