"""The one error type the Orthanc client raises."""

from __future__ import annotations

from typing import Any, Optional
from urllib.parse import urlsplit, urlunsplit


def redact_url(url: str) -> str:
    """Drop any ``user:password@`` part so a URL is safe to show or log."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<invalid URL>"
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))


FULL_STORAGE = 19      # Orthanc's ErrorCode_FullStorage
FULL_TEXT = "the target is full"


def full_storage_text(message: str, orthanc_status: object) -> str:
    """``message``, saying plainly that the target is full when Orthanc says FullStorage."""
    if orthanc_status == FULL_STORAGE and FULL_TEXT not in message:
        return f"{FULL_TEXT}: {message}"
    return message


class OrthancError(Exception):
    """A request to an Orthanc peer failed.

    Carries what happened and where: the HTTP method, the URL (without
    credentials), the HTTP status when there was an answer, and the fields of
    Orthanc's error JSON (``Message``, ``Details``, ``OrthancError``,
    ``OrthancStatus``). ``reason`` is a one-line text for the user.
    """

    def __init__(self, reason: str, *, method: str = "", url: str = "",
                 status: Optional[int] = None, body: Any = None,
                 peer: Optional[str] = None) -> None:
        self.reason = reason
        self.method = method
        self.url = redact_url(url) if url else ""
        self.status = status
        self.peer = peer
        self.body = body if isinstance(body, dict) else None
        info = self.body or {}
        self.message: Optional[str] = info.get("Message")
        self.details: Optional[str] = info.get("Details")
        self.orthanc_error: Optional[str] = info.get("OrthancError")
        self.orthanc_status: Optional[int] = info.get("OrthancStatus")
        super().__init__(self.__str__())

    @property
    def storage_full(self) -> bool:
        """Orthanc's FullStorage (19): its storage limits or its disk are full."""
        return self.orthanc_status == FULL_STORAGE or self.status == 507

    @property
    def is_retryable(self) -> bool:
        """Worth another try: no answer, a timeout, or a server-side hiccup
        (a full storage is no hiccup: trying again only deletes more patients)."""
        if self.storage_full:
            return False
        return self.status is None or self.status in (408, 429, 500, 502, 503, 504)

    def __str__(self) -> str:
        where = f"{self.method} {self.url}".strip()
        text = self.reason
        if self.status is not None:
            text = f"HTTP {self.status}: {text}"
        if self.storage_full:
            text = f"{FULL_TEXT}: {text}"
        extra = [x for x in (self.message, self.details) if x and x not in text]
        if extra:
            text += " — " + "; ".join(extra)
        if where:
            text += f" ({where})"
        if self.peer:
            text = f"{self.peer}: {text}"
        return text
