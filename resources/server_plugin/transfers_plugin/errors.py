"""Errors answered the way Orthanc answers them.

Orthanc's own errors carry a JSON body with ``HttpError``, ``HttpStatus``,
``Message``, ``Method``, ``OrthancError``, ``OrthancStatus`` and ``Uri``.
Raising from a Python REST callback only ever yields a generic 500 "plugin
engine" error, so every handler raises :class:`PluginError` and the router
turns it into that body, adding ``Details`` (what exactly went wrong) and,
where useful, ``Instances`` (which instances are concerned).
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional

# Orthanc error codes used here (values of OrthancPluginErrorCode) with the
# HTTP status Orthanc maps each to, and Orthanc's own description as fallback
# when the embedded API cannot be asked for it.
INTERNAL = (-1, 500, "Internal error")
PARAMETER_OUT_OF_RANGE = (3, 400, "Parameter out of range")
NOT_ENOUGH_MEMORY = (4, 500, "Not enough memory")
BAD_SEQUENCE_OF_CALLS = (6, 400, "Bad sequence of calls")
BAD_REQUEST = (8, 400, "Bad request")
NETWORK_PROTOCOL = (9, 500, "Error in the network protocol")
CANNOT_WRITE_FILE = (14, 500, "Cannot write to file")
BAD_FILE_FORMAT = (15, 400, "Bad file format")
UNKNOWN_RESOURCE = (17, 404, "Unknown resource")
FULL_STORAGE = (19, 507, "The file storage is full")
CORRUPTED_FILE = (20, 500, "Corrupted file (e.g. inconsistent MD5 hash)")
BAD_JSON = (28, 400, "Cannot parse a JSON document")

HTTP_REASONS = {
    200: "OK", 202: "Accepted", 400: "Bad Request", 401: "Unauthorized",
    403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
    409: "Conflict", 413: "Request Entity Too Large", 500: "Internal Server Error",
    507: "Insufficient Storage",
}

# Orthanc error codes as HTTP statuses, for errors coming back from Orthanc's
# own API (orthanc.OrthancException carries the code only).
ORTHANC_CODE_TO_HTTP = {
    3: 400, 5: 400, 6: 400, 7: 404, 8: 400, 12: 400, 15: 400, 17: 404,
    19: 507, 28: 400, 29: 401, 33: 400, 34: 406,
}


class PluginError(Exception):
    """An error to answer as an Orthanc error body.

    ``kind`` is one of the tuples above; ``details`` says what happened in
    words an admin or the desktop app can show; ``http_status`` overrides
    the status Orthanc would use for that code (e.g. 409 for a conflict).
    """

    def __init__(self, kind: tuple, details: str,
                 instances: Optional[List[Dict[str, Any]]] = None,
                 http_status: Optional[int] = None) -> None:
        super().__init__(details)
        self.code, default_status, self.fallback_message = kind
        self.http_status = http_status or default_status
        self.details = details
        self.instances = instances


def orthanc_error_kind(code: int) -> tuple:
    """An (code, http status, message) tuple for an Orthanc error code."""
    return (code, ORTHANC_CODE_TO_HTTP.get(code, 500), "Orthanc error %d" % code)


def error_body(error: PluginError, method: str, uri: str, describe=None) -> Dict[str, Any]:
    """The JSON body Orthanc would send, plus Details (and Instances)."""
    message = error.fallback_message
    if describe is not None:
        try:
            message = describe(error.code) or message
        except Exception:  # an unknown code must not hide the real error
            pass
    body: Dict[str, Any] = {
        "HttpError": HTTP_REASONS.get(error.http_status, "Error"),
        "HttpStatus": error.http_status,
        "Message": message,
        "Method": method,
        "OrthancError": message,
        "OrthancStatus": error.code,
        "Uri": uri,
        "Details": error.details,
    }
    if error.instances is not None:
        body["Instances"] = error.instances
    return body
