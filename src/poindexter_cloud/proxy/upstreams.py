"""The upstream AI providers, from configuration, and which one serves a model.

PROXY_UPSTREAMS is a JSON list; each provider is ``anthropic`` (the native Messages API) or
``openai-compatible`` (OpenAI itself, or any gateway speaking its API, such as Bifrost)::

    [{"name": "anthropic", "kind": "anthropic", "base_url": "https://api.anthropic.com",
      "api_keys": ["sk-ant-..."], "models": ["claude-sonnet-4-5"],
      "aliases": {"sonnet": "claude-sonnet-4-5"}},
     {"name": "openai", "kind": "openai-compatible", "base_url": "https://api.openai.com/v1",
      "api_keys": ["sk-..."], "models": ["gpt-4o", "text-embedding-3-small"],
      "endpoints": ["chat", "completions", "embeddings"]}]

An Anthropic base URL is the host (we add ``/v1/messages``); an OpenAI-compatible one includes its version
prefix (we add ``/chat/completions``), as each SDK expects. Several providers may serve one model: they are
tried in order when one fails before the first byte reached the client.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from poindexter_cloud.proxy.upstream_http import Target

Kind = Literal["anthropic", "openai-compatible"]
Endpoint = Literal["messages", "count_tokens", "chat", "completions", "embeddings"]

# What each kind serves, and where below its base URL.
PATHS_OF_KIND: dict[str, dict[Endpoint, str]] = {
    "anthropic": {
        "messages": "/v1/messages",
        "count_tokens": "/v1/messages/count_tokens",
        "chat": "/v1/messages",  # translated to the Messages API
    },
    "openai-compatible": {
        "chat": "/chat/completions",
        "completions": "/completions",
        "embeddings": "/embeddings",
    },
}


class Upstream(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    name: str
    kind: Kind
    base_url: str
    api_keys: list[str]
    models: list[str]
    aliases: dict[str, str] = {}
    endpoints: list[Endpoint] | None = None  # default: everything its kind speaks

    def serves(self, endpoint: Endpoint) -> bool:
        return endpoint in (self.endpoints or PATHS_OF_KIND[self.kind])


class Route(msgspec.Struct, frozen=True):
    """A provider able to answer a request on one endpoint, the model name to send it, and where."""

    upstream: Upstream
    model: str
    target: Target  # the URL, split once for the upstream client


class UpstreamConfigError(ValueError):
    pass


def parse_upstreams(raw: str) -> list[Upstream]:
    try:
        upstreams = msgspec.json.decode(raw, type=list[Upstream])
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise UpstreamConfigError(f"not a valid upstream list: {exc}") from None
    if not upstreams:
        raise UpstreamConfigError("at least one upstream is needed")
    for upstream in upstreams:
        if not upstream.api_keys:
            raise UpstreamConfigError(f"upstream {upstream.name!r} has no api_keys")
        unknown = set(upstream.aliases.values()) - set(upstream.models)
        if unknown:
            raise UpstreamConfigError(f"upstream {upstream.name!r} aliases unknown models {sorted(unknown)}")
        try:
            Target.of(upstream.base_url)
        except ValueError as exc:
            raise UpstreamConfigError(f"upstream {upstream.name!r}: {exc}") from None
    return upstreams


def sandbox_upstreams(sandbox_url: str) -> str:
    """The development default: the sandbox simulators of Anthropic and OpenAI."""
    return msgspec.json.encode(
        [
            {
                "name": "anthropic-sandbox",
                "kind": "anthropic",
                "base_url": f"{sandbox_url}/anthropic",
                "api_keys": ["sk-ant-sandbox-1", "sk-ant-sandbox-2"],
                "models": ["claude-sonnet-4-5", "claude-opus-4-1", "claude-haiku-4-5"],
                "aliases": {
                    "claude-sonnet": "claude-sonnet-4-5",
                    "claude-opus": "claude-opus-4-1",
                    "claude-haiku": "claude-haiku-4-5",
                },
            },
            {
                "name": "openai-sandbox",
                "kind": "openai-compatible",
                "base_url": f"{sandbox_url}/openai/v1",
                "api_keys": ["sk-sandbox-1"],
                "models": ["gpt-4o", "gpt-4o-mini", "gpt-3.5-turbo-instruct", "text-embedding-3-small"],
            },
        ]
    ).decode()


class Catalog:
    """Which providers serve which model, resolved once at start."""

    def __init__(self, upstreams: list[Upstream]) -> None:
        self.upstreams = upstreams
        self._routes: dict[tuple[str, str], list[Route]] = {}
        for upstream in upstreams:
            names = {model: model for model in upstream.models} | dict(upstream.aliases)
            for requested, actual in names.items():
                for endpoint, path in PATHS_OF_KIND[upstream.kind].items():
                    if upstream.serves(endpoint):
                        route = Route(upstream, actual, Target.of(upstream.base_url + path))
                        self._routes.setdefault((endpoint, requested), []).append(route)

    def routes(self, endpoint: Endpoint, model: str) -> list[Route]:
        """Providers for this model and endpoint, in configured order; empty if none."""
        return self._routes.get((endpoint, model), [])

    def models(self) -> list[tuple[str, Upstream]]:
        """Every model name a client may ask for (aliases included), with its first provider."""
        seen: dict[str, Upstream] = {}
        for upstream in self.upstreams:
            for name in [*upstream.models, *upstream.aliases]:
                seen.setdefault(name, upstream)
        return list(seen.items())
