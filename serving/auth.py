"""API keys with scopes: who may read which models, and who may write documents into which collections.

A key is a plain string (all rights: read and ingest, every model and collection; kept for old configs and for
`$DE_API_KEYS`) or a scoped entry in `router.api_keys`:

    - name: support-app
      key_env: SUPPORT_APP_KEY      # or key: "..." (the secret itself)
      scopes: [read]                # read: /v1/models, completions; ingest: POST /v1/documents
      models: [support-expert]      # models, adapters or routes it may call (null: all)
      collections: [manuals]        # collections it may search or write (null: all)

Two rules hold for every key, however wide: a request through a route that pins a collection cannot name another
collection unless its key lists that collection by name (a null "all" does not count), so one leaked key cannot
point a route at a poisoned collection; and a router bound beyond loopback refuses to start without any key
unless `router.allow_unauthenticated` says so, judged on the address Serve's proxy actually binds.
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Collection
from dataclasses import dataclass
from typing import Literal

from pydantic import Field, model_validator

from core.config import BaseConfig
from serving.protocol import APIError

Scope = Literal["read", "ingest"]
LOOPBACK = ("127.0.0.1", "localhost", "::1")


class ApiKeyConfig(BaseConfig):
    """One scoped key (`router.api_keys` entry)."""

    name: str = Field(description="Who holds it (shown in errors and logs, never the secret).")
    key: str | None = Field(default=None, min_length=16, description="The secret (16+ characters).")
    key_env: str | None = Field(default=None, description="Environment variable holding the secret instead.")
    scopes: list[Scope] = Field(default_factory=lambda: ["read"], min_length=1, description="read, ingest.")
    models: list[str] | None = Field(
        default=None, description="Models/adapters/routes it may call (null: all)."
    )
    collections: list[str] | None = Field(
        default=None,
        description="Collections it may search or write (null: all; a route's pin needs a name).",
    )

    @model_validator(mode="after")
    def _one_secret(self) -> ApiKeyConfig:
        if (self.key is None) == (self.key_env is None):
            raise ValueError(f"api key {self.name!r}: set exactly one of key or key_env")
        return self


@dataclass(frozen=True)
class Principal:
    """What the presented key may do; `open` is the principal of a router that has no keys at all."""

    name: str
    scopes: frozenset[str]
    models: frozenset[str] | None
    collections: frozenset[str] | None

    def require(self, scope: str) -> None:
        if scope not in self.scopes:
            raise APIError(403, f"API key {self.name!r} lacks the {scope!r} scope", code="insufficient_scope")

    def may_call(self, model: str, routes: Collection[str] = ()) -> bool:
        """Listed by name; `adapter@N` too when `adapter` is listed and is not a route's name (a key given the
        route `r` must not reach an adapter that happens to be called `r`, nor leave the route's collection)."""
        if self.models is None or model in self.models:
            return True
        name, at, _ = model.partition("@")
        return bool(at) and name in self.models and name not in routes

    def check_model(self, model: str, routes: Collection[str] = ()) -> None:
        if not self.may_call(model, routes):
            raise APIError(
                403,
                f"API key {self.name!r} may not call model {model!r}",
                param="model",
                code="model_not_allowed",
            )

    def check_collection(self, collection: str, pinned_by_route: str | None = None) -> None:
        """`pinned_by_route`: the collection the request's route pins, if it names a different one."""
        if pinned_by_route is not None and collection != pinned_by_route:
            if self.collections is None or collection not in self.collections:
                raise APIError(
                    403,
                    f"this route searches collection {pinned_by_route!r}; API key {self.name!r} may not point it "
                    f"at {collection!r} (list that collection in the key's collections to allow it)",
                    param="rag.collection",
                    code="collection_not_allowed",
                )
            return
        if self.collections is not None and collection not in self.collections:
            raise APIError(
                403,
                f"API key {self.name!r} may not use collection {collection!r}",
                param="collection",
                code="collection_not_allowed",
            )


OPEN = Principal("anonymous", frozenset({"read", "ingest"}), None, None)


class KeyRing:
    """The keys a router accepts, resolved once at start (env secrets read then)."""

    def __init__(self, entries: list[str | ApiKeyConfig], env_var: str | None) -> None:
        self.keys: list[tuple[str, Principal]] = []
        full = frozenset({"read", "ingest"})
        for i, entry in enumerate(entries):
            if isinstance(entry, str):
                self.keys.append((entry, Principal(f"key-{i + 1}", full, None, None)))
                continue
            secret = entry.key if entry.key is not None else os.environ.get(entry.key_env or "", "")
            if not secret:
                raise RuntimeError(f"api key {entry.name!r}: ${entry.key_env} is empty or unset")
            models = None if entry.models is None else frozenset(entry.models)
            colls = None if entry.collections is None else frozenset(entry.collections)
            self.keys.append((secret, Principal(entry.name, frozenset(entry.scopes), models, colls)))
        if env_var and os.environ.get(env_var):
            for secret in (k.strip() for k in os.environ[env_var].split(",")):
                if secret:
                    self.keys.append((secret, Principal(f"${env_var}", full, None, None)))

    def __bool__(self) -> bool:
        return bool(self.keys)

    def authenticate(self, authorization: str) -> Principal:
        """The principal of `Authorization: Bearer <key>`; OPEN when no keys are configured; 401 otherwise."""
        if not self.keys:
            return OPEN
        token = authorization[7:].strip() if authorization.lower().startswith("bearer ") else ""
        found = None
        for secret, principal in self.keys:  # compare against every key: timing says nothing about which
            if token and hmac.compare_digest(token.encode(), secret.encode()):
                found = principal
        if found is None:
            raise APIError(
                401, "missing or invalid API key: send 'Authorization: Bearer <key>'", code="invalid_api_key"
            )
        return found


def check_exposure(ring: KeyRing, bound_host: str, allow_unauthenticated: bool, where: str) -> None:
    """Fail closed: a router reachable beyond loopback needs keys unless openness is explicit.

    `bound_host` is what Serve's proxy binds (its http_options), which under `serve deploy` or a RayService is not
    `router.host`."""
    if not ring and bound_host not in LOOPBACK and not allow_unauthenticated:
        raise RuntimeError(
            f"Serve's proxy binds {bound_host} but no API key is configured ({where} is empty); "
            "set keys, or router.allow_unauthenticated: true to serve openly"
        )


def serve_bound_host(default: str) -> str:
    """The host Serve's HTTP proxy binds, asked of the Serve controller (falls back to `default`)."""
    try:
        import ray
        from ray.serve._private.constants import SERVE_CONTROLLER_NAME, SERVE_NAMESPACE

        controller = ray.get_actor(SERVE_CONTROLLER_NAME, namespace=SERVE_NAMESPACE)
        return str(ray.get(controller.get_http_config.remote(), timeout=10).host)
    except Exception:  # noqa: BLE001 - outside Serve (unit use): the configured host is all there is
        return default
