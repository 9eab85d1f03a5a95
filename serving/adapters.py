"""The router's view of the adapter store: which adapters it may serve, and which version a request gets.

`model="name"` gets the version the store's `CURRENT` pointer names, read again at most every
`adapters.pointer_ttl_s` (0: on every request), so a re-publish or a rollback is served on the next request
with no restart. `model="name@3"` pins version 3. The LLM deployment loads and caches adapters by `name@version`,
so a replica never answers a new version with the old weights it still holds under the same name.

Only adapters trained on the served base (same `base_fingerprint`) are listed or answered; a request for another
base's adapter gets a 400 naming both bases, rather than fluent nonsense from mismatched weights.
"""

from __future__ import annotations

import asyncio
import logging
import time

from core.adapter_store import (
    AdapterBaseMismatch,
    AdapterInfo,
    AdapterStore,
    check_compatible,
    check_ref,
)
from core.adapter_versions import ref as version_ref
from core.adapter_versions import split_ref
from core.errors import UserError
from serving.protocol import APIError

logger = logging.getLogger("ray.serve")

FORCED_REFRESH_MIN_S = 1.0  # a miss re-lists the store at most this often
REMOTE_POINTER_TTL_S = 5.0  # object storage: re-read a name's pointer at most this often


class AdapterCatalog:
    """Listing (for /v1/models, refreshed every `refresh_s` or on a miss) and per-request version resolution."""

    def __init__(
        self, store: AdapterStore, base: str, base_fp: str, refresh_s: float, pointer_ttl_s: float | None
    ) -> None:
        self.store, self.base, self.base_fp = store, base, base_fp
        if pointer_ttl_s is None:
            pointer_ttl_s = REMOTE_POINTER_TTL_S if store.remote else 0.0
        self.refresh_s, self.pointer_ttl_s = refresh_s, pointer_ttl_s
        self.adapters: dict[str, AdapterInfo] = {}  # current version of everything listed, compatible or not
        self.skipped: dict[str, str] = {}  # unreadable adapters: name -> why (logged once each)
        self.listed_at: float | None = None
        self._current: dict[str, tuple[int, float]] = {}  # name -> (version, when the pointer was read)
        self._versions: dict[str, AdapterInfo] = {}  # name@version -> metadata (versions are immutable)

    async def refresh(self, force: bool = False) -> None:
        age = None if self.listed_at is None else time.monotonic() - self.listed_at
        if force and age is not None and age < FORCED_REFRESH_MIN_S:
            # Unknown names cannot make the router hammer the store: wait out the rest of that second (bounded)
            # unless another request re-listed meanwhile.
            listed_at = self.listed_at
            await asyncio.sleep(FORCED_REFRESH_MIN_S - age)
            if self.listed_at != listed_at:
                return
        if force or age is None or age > self.refresh_s:
            listed, skipped = await asyncio.to_thread(self.store.list_with_problems)
            for name, reason in skipped.items():
                if self.skipped.get(name) != reason:
                    logger.warning("adapter %r skipped: %s", name, reason)
            self.adapters, self.skipped = {a.name: a for a in listed}, skipped
            self.listed_at = time.monotonic()

    def servable(self) -> list[AdapterInfo]:
        return [a for a in self.adapters.values() if a.fits(self.base_fp)]

    async def lookup(self, ref: str, via: str = "") -> AdapterInfo | None:
        """The version `ref` means, if it is in the store (None if not); APIError 404 for a missing pinned
        version, 400 for an adapter of another base. `via` names the route that asked, for messages."""
        try:
            name, pinned = split_ref(check_ref(ref))
        except UserError as exc:
            raise APIError(404, f"{via}{exc}", param="model", code="model_not_found") from None
        await self.refresh()
        if name not in self.adapters:
            await self.refresh(force=True)  # newly published adapters answer at once
            if name not in self.adapters:
                return None
        try:
            version = pinned if pinned is not None else await self._current_version(name)
            info = await self._version(version_ref(name, version))
        except UserError as exc:  # a pinned version that is not (or no longer) in the store
            raise APIError(404, f"{via}{exc}", param="model", code="model_not_found") from None
        try:
            check_compatible(info, self.base_fp, self.base)
        except AdapterBaseMismatch as exc:
            raise APIError(400, f"{via}{exc}", param="model", code="adapter_base_mismatch") from None
        return info

    async def _current_version(self, name: str) -> int:
        cached = self._current.get(name)
        now = time.monotonic()
        if cached is not None and now - cached[1] < self.pointer_ttl_s:
            return cached[0]
        _, version = await asyncio.to_thread(self.store.resolve, name)
        self._current[name] = (version, now)
        return version

    async def _version(self, ref: str) -> AdapterInfo:
        info = self._versions.get(ref)
        if info is None:
            info = await asyncio.to_thread(self.store.get, ref)
            self._versions[ref] = info
        return info
