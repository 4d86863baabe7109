"""Answers through orthanc-python's RestOutput, and the error mapping.

Found by experiment on orthanc-python 4.0: ``SendHttpStatus(status, text,
length)`` wants a *str* body with its length in bytes and answers any status
but 200/301/401/405; 405 must go through ``SendMethodNotAllowed`` (no body),
200 through ``AnswerBuffer``.
"""

from __future__ import annotations

import json
import traceback
from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional

from .errors import BAD_JSON, BAD_REQUEST, INTERNAL, PluginError, error_body
from .safe_json import MAX_JSON_DEPTH, json_too_deep


@dataclass
class Answer:
    body: Any                         # JSON value, or bytes with ``content_type``
    status: int = 200
    content_type: str = "application/json"
    headers: Optional[Dict[str, str]] = None   # extra headers of a 200 answer


def send(output: Any, answer: Answer) -> None:
    if isinstance(answer.body, (bytes, bytearray)):
        data, content_type = bytes(answer.body), answer.content_type
    else:
        data, content_type = json.dumps(answer.body).encode("ascii"), "application/json"
    if answer.status == 200:
        for name, value in (answer.headers or {}).items():
            output.SetHttpHeader(name, value)
        output.AnswerBuffer(data, content_type)
    else:
        output.SetHttpHeader("Content-Type", content_type)
        text = data.decode("ascii")  # JSON with ensure_ascii: one byte per character
        output.SendHttpStatus(answer.status, text, len(text))


def parse_json_body(request: Dict[str, Any], limit: int, where: str) -> Any:
    """The request body as JSON; Content-Type is ignored on purpose (peers label
    JSON as application/x-www-form-urlencoded)."""
    body = request.get("body") or b""
    if len(body) > limit:
        raise PluginError(BAD_REQUEST, "%s: body of %d bytes exceeds MaxRequestSize (%d bytes)"
                          % (where, len(body), limit), http_status=413)
    if json_too_deep(body):
        raise PluginError(BAD_JSON, "%s: the JSON body is nested more than %d levels deep or its brackets"
                          " are unbalanced" % (where, MAX_JSON_DEPTH))
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise PluginError(BAD_JSON, "%s: the body is not valid JSON (%s)" % (where, str(exc)[:120]))
    except RecursionError:
        raise PluginError(BAD_JSON, "%s: the JSON body is nested too deeply" % where)


Handler = Callable[..., Answer]


class Router:
    """Turns handlers into orthanc-python REST callbacks with uniform error answers."""

    def __init__(self, wire_error: type, describe: Optional[Callable[[int], str]],
                 log_error: Callable[[str], None]) -> None:
        self.wire_error = wire_error
        self.describe = describe
        self.log_error = log_error

    def callback(self, methods: Any) -> Callable[..., None]:
        """``methods``: {HTTP method: handler}, or a function of the URI's regex
        groups giving that table (for routes whose last segment decides)."""

        def on_request(output: Any, uri: str, **request: Any) -> None:
            method = request.get("method", "GET")
            table = methods(*request.get("groups", ())) if callable(methods) else methods
            handler = table.get(method)
            if handler is None:
                output.SendMethodNotAllowed(",".join(sorted(table)))
                return
            try:
                answer = handler(request, *request.get("groups", ()))
            except PluginError as exc:
                answer = self._error(exc, method, uri)
            except self.wire_error as exc:
                answer = self._error(PluginError(BAD_REQUEST, str(exc)), method, uri)
            except MemoryError:
                answer = self._error(PluginError(INTERNAL, "out of memory while handling the request"), method, uri)
            except Exception as exc:  # never let a bug become Orthanc's opaque 500
                self.log_error("transfers: unexpected error on %s %s:\n%s" % (method, uri, traceback.format_exc()))
                answer = self._error(PluginError(INTERNAL, "unexpected error in the transfers plugin: %s: %s"
                                                 % (type(exc).__name__, exc)), method, uri)
            send(output, answer)

        return on_request

    def _error(self, exc: PluginError, method: str, uri: str) -> Answer:
        return Answer(error_body(exc, method, uri, self.describe), status=exc.http_status)
