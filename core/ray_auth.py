"""Ray 2.60 token authentication, from the client side: find the cluster's token and send it.

A head started with `ray start --head` turns token auth on by default and writes its token to ~/.ray/auth_token,
but Ray's own clients (the job SDK behind `ray job submit`, the state API, `ray.init(address=...)`) only send a
token when RAY_AUTH_MODE=token is set. So a default head answers "Authentication required" to a plain
`ray job submit`. Our CLIs do what a user would: when the mode is not chosen and a token can be found
(RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH, ~/.ray/auth_token), they switch token mode on for this process.
"""

from __future__ import annotations

import os
from pathlib import Path

MODE_ENV = "RAY_AUTH_MODE"


def token_source() -> tuple[str | None, str]:
    """(token, where it came from) in Ray's own order of precedence; (None, "") when there is none."""
    token = os.environ.get("RAY_AUTH_TOKEN", "").strip()
    if token:
        return token, "$RAY_AUTH_TOKEN"
    path = Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token").expanduser()
    try:
        token = path.read_text().strip()
    except OSError:
        return None, ""
    return (token, str(path)) if token else (None, "")


def enable_client_auth() -> str | None:
    """Turn on token mode for this process if the user left it unset and a token exists; return its source.

    For CLI processes only (submit, status, preflight): the mode is process-wide and sticks, and in a long-lived
    process that later starts or joins a cluster without auth it broke Serve handle calls (measured: the multinode
    scenario's Serve requests timed out). RAY_AUTH_MODE=disabled (or any explicit mode) is respected as is.
    """
    mode = os.environ.get(MODE_ENV)
    if mode is not None and mode.lower() != "token":
        return None
    token, where = token_source()
    if token is None:
        return None
    if mode is None:
        os.environ[MODE_ENV] = "token"
        try:
            from ray._raylet import Config

            Config.initialize("")  # Ray caches its config per process; re-read it so the mode applies now
        except (ImportError, AttributeError):
            pass
    return where


def auth_error_hint(address: str, exc: BaseException) -> str | None:
    """An actionable line for a 401/403 from a Ray cluster, or None if `exc` is not an auth failure."""
    text = str(exc)
    if "Authentication required" in text or "Missing authentication token" in text or " 401" in text:
        token, where = token_source()
        found = (
            f" (found one in {where}, but it was not sent: RAY_AUTH_MODE={os.environ.get(MODE_ENV)})"
            if token
            else ""
        )
        return (
            f"the Ray cluster at {address} requires a token{found}: on the head run `ray get-auth-token`, then "
            "export RAY_AUTH_TOKEN=<token> here (or copy it to ~/.ray/auth_token) and retry"
        )
    if "Authentication failed" in text or "Invalid authentication token" in text or " 403" in text:
        _, where = token_source()
        return (
            f"the Ray cluster at {address} rejected the token from {where or 'this environment'}: it belongs to "
            "another cluster; take the head's with `ray get-auth-token`"
        )
    return None
