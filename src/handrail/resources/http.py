"""External services behind an HTTP API: rate-limited, retrying requests that never
repeat a write whose outcome is unknown.

An HTTP service is not a database handrail can copy: other people see it, it has no
transaction to join, and it cannot be restored from a file. So the contract differs from
the local resources in documented ways:

- ``external = True``: a step that writes it is at least tier ``external`` (policy 3:
  stages with a gate after each).
- ``snapshot()`` writes a *record*, not a restorable backup: the bodies of the configured
  ``fingerprint_paths`` (possibly none) and a note. The prior value of each item a push
  changes is read and kept by the push step itself, right before it writes that item (the
  only moment that value is accurate: an up-front copy would be hours stale by the last
  stage). ``restore()`` refuses and points at ``handrail rollback``.
- ``fingerprint()`` digests the JSON bodies of ``fingerprint_paths`` (GET requests), one
  part per path; with none configured the service is *not fingerprintable* and the digest
  is a constant, so comparisons around it say nothing (the push step verifies item by item).
- ``clone()`` returns the same service at ``sandbox_url`` when one is configured, and
  refuses otherwise: a rehearsal never writes to production.

Requests (:meth:`HTTPService.send`) are rate limited by a token bucket and retried with
exponential backoff and jitter. What is retried depends on whether a retry can repeat an
effect:

========================================  ===============  ==============================
what happened                             reads (GET)      writes (PUT, POST, ...)
========================================  ===============  ==============================
could not connect (nothing was sent)      retry            retry
429 Too Many Requests                     retry after      retry after ``Retry-After``
                                          ``Retry-After``
5xx                                       retry            :class:`OutcomeUnknown`
timeout or connection lost after sending  retry            :class:`OutcomeUnknown`
401 / 403                                 refused: exit 2  :class:`CredentialsRefused`
404                                       RemoteNotFound   RemoteNotFound
other 4xx                                 RemoteError      RemoteError
========================================  ===============  ==============================

:class:`CredentialsRefused` is a :class:`ResourceError` (bad input, exit 2).
:class:`OutcomeUnknown` is never retried here: the caller reads the remote state first
and sends again only if the write did not take effect (see ``ops/http_push.py``).
"""

from __future__ import annotations

import email.utils
import os
import random
import threading
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import urlsplit, urlunsplit

from ..engine import fencing
from ..errors import CredentialsRefused, ResourceError, StepFailed
from ..hashing import canonical_json, digest_parts, sha256_file, sha256_text
from ..redact import redact, register_secret
from ._files import atomic_write_bytes
from .base import Backup, Fingerprint, Resource

if TYPE_CHECKING:
    import httpx

#: methods that change nothing on the server, so any failure can simply be retried
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
#: header names whose values are treated as secrets (masked in everything handrail writes)
_SECRET_HEADER_WORDS = ("auth", "token", "key", "cookie", "secret", "password")


class RemoteError(StepFailed):
    """The service answered with an error, or kept failing until the retries ran out."""

    def __init__(self, message: str, *, status: int | None = None, hint: str | None = None):
        super().__init__(message, hint=hint)
        self.status = status


class RemoteNotFound(RemoteError):
    """The service says the item does not exist (404)."""


class OutcomeUnknown(Exception):
    """A write was sent (or may have been) and no usable answer came back: a timeout or a
    lost connection after sending, or a 5xx. It may or may not have taken effect; read the
    remote state before sending it again. Internal: never reaches the user."""

    def __init__(self, method: str, path: str, cause: str) -> None:
        super().__init__(f"{method} {path}: outcome unknown ({cause})")
        self.method, self.path, self.cause = method, path, cause


class TokenBucket:
    """At most ``rate`` requests per second on average, ``burst`` at once.

    Thread-safe; :meth:`acquire` blocks until a token is free and returns how long it
    waited. With the default ``burst=1`` requests are spaced at least ``1/rate`` apart.
    """

    def __init__(self, rate: float, burst: int = 1) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        if burst < 1:
            raise ValueError("burst must be at least 1")
        self.rate, self.burst = float(rate), burst
        self._tokens = float(burst)
        self._stamp = time.monotonic()
        self._lock = threading.Lock()

    def acquire(self) -> float:
        waited = 0.0
        while True:
            with self._lock:
                now = time.monotonic()
                self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
                self._stamp = now
                if self._tokens >= 1.0:
                    self._tokens -= 1.0
                    return waited
                delay = (1.0 - self._tokens) / self.rate
            time.sleep(delay)
            waited += delay


def backoff_delay(attempt: int, base: float, cap: float) -> float:
    """Exponential backoff with jitter: half of ``min(cap, base * 2**attempt)`` fixed,
    the other half random, so clients that failed together do not retry together."""
    ceiling = min(cap, base * float(2**attempt))
    return ceiling / 2 + random.uniform(0, ceiling / 2)


def retry_after_seconds(value: str | None) -> float | None:
    """``Retry-After`` as seconds: delta-seconds or an HTTP date; None if absent or bad."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, float((when - datetime.now(UTC)).total_seconds()))


def _strip_credentials(url: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


class HTTPService(Resource):
    """A service behind an HTTP API, e.g. a PeerTube instance.

    ``token_env`` names the environment variable holding a bearer token (read when a
    request is made, so the runbook file never contains it); ``token`` passes one directly
    (for code that gets it from a secrets store). Either way the token is registered as a
    secret and masked in the journal, logs and reports, and sent as
    ``Authorization: Bearer …``. ``headers`` are sent with every request; values of
    headers whose name mentions auth, token, key, cookie, secret or password are masked
    too.

    ``rate_limit`` (requests per second, ``burst`` at once) covers every request to this
    service from this process. ``retries``, ``backoff`` and ``max_backoff`` shape the
    retries described in the module docstring; a ``Retry-After`` longer than
    ``max_retry_after`` seconds is an error instead of a wait.

    ``fingerprint_paths``: GET endpoints whose JSON bodies make the fingerprint (and the
    snapshot record), e.g. ``["/api/v1/videos?count=100&sort=id"]``. ``sandbox_url``: a
    test instance that rehearsals run against.
    """

    kind: ClassVar[str] = "http"
    external: ClassVar[bool] = True
    restore_testable: ClassVar[bool] = False
    transactional: ClassVar[bool] = False

    def __init__(
        self,
        name: str,
        base_url: str,
        *,
        token_env: str | None = None,
        token: str | None = None,
        headers: Mapping[str, str] | None = None,
        sandbox_url: str | None = None,
        timeout: float = 10.0,
        rate_limit: float | None = None,
        burst: int = 1,
        retries: int = 5,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
        max_retry_after: float = 300.0,
        fingerprint_paths: Sequence[str] = (),
        backup_when_read: bool = True,
    ) -> None:
        super().__init__(name, backup_when_read=backup_when_read)
        for label, url in (("base_url", base_url), ("sandbox_url", sandbox_url)):
            if url is not None and urlsplit(url).scheme not in ("http", "https"):
                raise ResourceError(f"{name}: {label} must be an http(s) URL, got {redact(url)!r}")
        if token is not None and token_env is not None:
            raise ResourceError(f"{name}: give token or token_env, not both")
        if retries < 0 or timeout <= 0 or backoff < 0:
            raise ResourceError(f"{name}: retries, timeout and backoff must be positive")
        self.base_url = base_url.rstrip("/")
        self.token_env = token_env
        self._token = token
        if token:
            register_secret(token)
        self.headers = dict(headers or {})
        for key, value in self.headers.items():
            if any(word in key.lower() for word in _SECRET_HEADER_WORDS):
                register_secret(value)
        self.sandbox_url = sandbox_url
        self.timeout = timeout
        self.rate_limit = rate_limit
        self.burst = burst
        self.retries = retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.max_retry_after = max_retry_after
        self.fingerprint_paths = tuple(fingerprint_paths)
        self._bucket = TokenBucket(rate_limit, burst) if rate_limit else None
        if token_env and os.environ.get(token_env):
            register_secret(os.environ[token_env])

    # -- identity -------------------------------------------------------------------------
    def location(self) -> str:
        return _strip_credentials(self.base_url)

    def settings(self) -> dict[str, Any]:
        """Everything that defines how it is called, without secrets (for plan hashes)."""
        return {
            "base_url": self.location(),
            "token_env": self.token_env,
            "headers": sorted(self.headers),
            "rate_limit": self.rate_limit,
            "burst": self.burst,
            "retries": self.retries,
            "timeout": self.timeout,
            "fingerprint_paths": list(self.fingerprint_paths),
            "sandbox": _strip_credentials(self.sandbox_url) if self.sandbox_url else None,
        }

    def token(self) -> str | None:
        """The bearer token, or None when the service takes none."""
        if self._token is not None:
            return self._token
        if self.token_env is None:
            return None
        value = os.environ.get(self.token_env)
        if not value:
            raise ResourceError(
                f"{self.name}: the environment variable {self.token_env} holding the API "
                "token is not set",
                hint=f"export {self.token_env}=… before running",
            )
        register_secret(value)
        return value

    # -- requests -------------------------------------------------------------------------
    def client(self) -> httpx.Client:
        """A new ``httpx.Client`` on the base URL with the auth headers; close it after use."""
        try:
            import httpx
        except ImportError as exc:  # pragma: no cover - depends on the installation
            raise ResourceError(
                "HTTP services need httpx", hint="pip install 'handrail[http]'"
            ) from exc
        headers = {"Accept": "application/json", "User-Agent": "handrail"} | self.headers
        token = self.token()
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return httpx.Client(base_url=self.base_url, headers=headers, timeout=self.timeout)

    def _wait(self, seconds: float, stats: Counter[str] | None) -> None:
        if stats is not None:
            stats["backoff_ms"] += int(seconds * 1000)
        time.sleep(seconds)

    def send(
        self,
        client: httpx.Client,
        method: str,
        path: str,
        *,
        json: Any = None,
        stats: Counter[str] | None = None,
    ) -> httpx.Response:
        """One logical request, rate limited and retried as the module docstring says.

        Returns a 2xx or 3xx response. Raises :class:`OutcomeUnknown` for a write whose
        effect is unknown, :class:`RemoteNotFound` for 404, :class:`CredentialsRefused`
        (a :class:`ResourceError`, exit 2) for 401/403 and :class:`RemoteError` for other
        errors or when retries run out.
        ``stats`` (optional) counts requests, retries and waits.
        """
        import httpx

        method = method.upper()
        safe = method in SAFE_METHODS
        where = f"{self.name}: {method} {path}"
        last = "no attempt made"
        for attempt in range(self.retries + 1):
            if self._bucket is not None:
                self._bucket.acquire()
            if stats is not None:
                stats["requests"] += 1
                if attempt:
                    stats["retries"] += 1
            fencing.before_request(method)  # a process that lost its lease sends no write
            try:
                kwargs: dict[str, Any] = {} if json is None and safe else {"json": json}
                resp = client.request(method, path, **kwargs)
            except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
                # Nothing reached the server: retrying cannot repeat an effect.
                last = f"cannot connect: {type(exc).__name__}"
                self._wait(backoff_delay(attempt, self.backoff, self.max_backoff), stats)
                continue
            except httpx.TransportError as exc:
                # Sent (maybe in part), then timed out or lost the connection.
                last = f"{type(exc).__name__} after sending"
                if not safe:
                    if stats is not None:
                        stats["unknown_outcome"] += 1
                    raise OutcomeUnknown(method, path, last) from exc
                self._wait(backoff_delay(attempt, self.backoff, self.max_backoff), stats)
                continue
            status = resp.status_code
            if status == 429:
                if stats is not None:
                    stats["throttled"] += 1
                wait = retry_after_seconds(resp.headers.get("Retry-After"))
                if wait is not None and wait > self.max_retry_after:
                    raise RemoteError(
                        f"{where}: the service asks to wait {wait:.0f}s (Retry-After), more "
                        f"than max_retry_after={self.max_retry_after:g}s",
                        status=429,
                        hint="run again later to resume",
                    )
                last = "429 Too Many Requests"
                if wait is None:
                    wait = backoff_delay(attempt, self.backoff, self.max_backoff)
                self._wait(wait, stats)
                continue
            if status >= 500:
                last = f"{status} {resp.reason_phrase}"
                if not safe:
                    if stats is not None:
                        stats["unknown_outcome"] += 1
                    raise OutcomeUnknown(method, path, last)
                self._wait(backoff_delay(attempt, self.backoff, self.max_backoff), stats)
                continue
            if status in (401, 403):
                raise self._refused(where, status, resp.reason_phrase)
            if status == 404:
                raise RemoteNotFound(f"{where}: 404 Not Found", status=404)
            if status >= 400:
                raise RemoteError(
                    f"{where}: {status} {resp.reason_phrase}: {_excerpt(resp)}", status=status
                )
            return resp
        raise RemoteError(
            f"{where}: gave up after {self.retries + 1} attempt(s); last: {last}",
            hint="the service may be down or overloaded; run again later to resume",
        )

    def get_json(
        self, client: httpx.Client, path: str, *, stats: Counter[str] | None = None
    ) -> Any:
        """GET ``path`` and decode its JSON body (None for an empty body)."""
        resp = self.send(client, "GET", path, stats=stats)
        if not resp.content:
            return None
        try:
            return resp.json()
        except ValueError as exc:
            raise RemoteError(
                f"{self.name}: GET {path} did not return JSON: {_excerpt(resp)}"
            ) from exc

    # -- the resource contract ---------------------------------------------------------------
    def exists(self) -> bool:
        return True

    def validate(self) -> None:
        """The token is available and, when there is a ``fingerprint_paths`` endpoint to
        read, the service accepts it: ``run`` validates before taking the lease, so refused
        credentials are bad input (exit 2) before anything is written. Reachability is left
        to the first request (a plan reads a sample, so an unreachable service shows up
        there); only a 401/403 answer to this read is an error here."""
        self.token()
        if self.fingerprint_paths:
            self._prove_credentials(self.fingerprint_paths[0])

    def _prove_credentials(self, path: str) -> None:
        import httpx

        with self.client() as client:
            try:
                resp = client.get(path)
            except httpx.HTTPError:
                return  # unreachable: the first real request retries and reports it
        if resp.status_code in (401, 403):
            raise self._refused(f"{self.name}: GET {path}", resp.status_code, resp.reason_phrase)

    def _refused(self, where: str, status: int, reason: str) -> CredentialsRefused:
        return CredentialsRefused(
            f"{where}: {status} {reason}: the service refused the credentials; "
            "nothing was written by this request",
            status=status,
            hint=f"check the token in ${self.token_env}, then run the same command again"
            if self.token_env
            else "check the service's token, then run the same command again",
        )

    def _bodies(self) -> dict[str, Any]:
        if not self.fingerprint_paths:
            return {}
        with self.client() as client:
            return {p: self.get_json(client, p) for p in self.fingerprint_paths}

    def _fingerprint_of(self, bodies: dict[str, Any]) -> Fingerprint:
        if not bodies:
            # Not fingerprintable: a constant, so "before == after" holds trivially.
            return Fingerprint(sha256_text(f"http-not-fingerprinted\0{self.location()}"))
        parts = {f"GET {p}": sha256_text(canonical_json(b)) for p, b in bodies.items()}
        return Fingerprint(digest_parts("http", parts), parts)

    def fingerprint(self) -> Fingerprint:
        return self._fingerprint_of(self._bodies())

    def snapshot(self, dest: Path) -> Backup:
        """A checksummed record of the fingerprint endpoints; not a restorable backup."""
        bodies = self._bodies()
        note = (
            "an external service is not restored from a backup: push steps keep each "
            "item's prior value and `handrail rollback` puts them back item by item"
        )
        record = {
            "service": self.location(),
            "note": note,
            "taken_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "endpoints": bodies,
        }
        target = dest / f"{self.name}.http.json"
        atomic_write_bytes(target, (canonical_json(record) + "\n").encode())
        digest, size = sha256_file(target)
        return Backup(
            self.name,
            self.kind,
            target,
            digest,
            size,
            self._fingerprint_of(bodies),
            {
                "note": note,
                "endpoints": list(self.fingerprint_paths),
                "fingerprintable": bool(bodies),
            },
        )

    def restore(self, backup: Backup) -> None:
        raise ResourceError(
            f"{self.name}: an external HTTP service ({self.location()}) cannot be restored "
            "from a backup",
            hint="roll the run back instead (`handrail rollback RUN`): push steps put back "
            "each item's prior value and report items changed since",
        )

    def check_clone(self) -> None:
        """Refuses without a ``sandbox_url``: a rehearsal never writes to production."""
        if not self.sandbox_url:
            raise ResourceError(
                f"{self.name}: cannot make a scratch copy of the external service "
                f"{self.location()}: no sandbox_url is configured",
                hint="give HTTPService(sandbox_url=...) a test instance to rehearse against",
            )

    def clone(self, scratch: Path) -> HTTPService:
        """The same service at ``sandbox_url`` (its content is whatever the sandbox holds:
        an HTTP service cannot be copied); refuses without one."""
        self.check_clone()
        assert self.sandbox_url is not None
        return HTTPService(
            self.name,
            self.sandbox_url,
            token_env=self.token_env,
            token=self._token,
            headers=self.headers,
            sandbox_url=self.sandbox_url,
            timeout=self.timeout,
            rate_limit=self.rate_limit,
            burst=self.burst,
            retries=self.retries,
            backoff=self.backoff,
            max_backoff=self.max_backoff,
            max_retry_after=self.max_retry_after,
            fingerprint_paths=self.fingerprint_paths,
            backup_when_read=self.backup_when_read,
        )

    def clone_empty(self, scratch: Path) -> HTTPService:
        return self.clone(scratch)


def _excerpt(resp: httpx.Response, limit: int = 200) -> str:
    text = resp.text.strip().replace("\n", " ")
    return redact(text if len(text) <= limit else text[: limit - 1] + "…")
