"""The log format of an instance: Tornado's, with the instance's name and the request's ID on
every line; with LOG_FORMAT=json, one JSON object per record (python-json-logger)."""

from __future__ import annotations

import contextvars
import logging

import tornado.log

# The ID of the request being handled (nginx's X-Request-ID): every log line written while
# handling it carries it. Set when Tornado creates the request's transforms (drain.py), which is
# just before it starts the handler's task, so the task (and all it awaits) inherits it. Apps
# read it as tornado_bundle.runner.REQUEST_ID.get().
REQUEST_ID: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="")
# The bundle's own lines in an instance (listening, draining, blocked loop).
log = logging.getLogger("tornado_bundle")


class RequestIdFilter(logging.Filter):
    """Adds the request's ID (REQUEST_ID) and a lower-case level to every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = REQUEST_ID.get()
        record.level = record.levelname.lower()
        return True


class TextFormatter(tornado.log.LogFormatter):
    """Tornado's format; the request's ID after the location, and at the start of every further
    line of a record (a traceback), so that one grep for an ID finds all of them."""

    def format(self, record: logging.LogRecord) -> str:
        request_id = getattr(record, "request_id", "")
        record.request_tag = f"{request_id} " if request_id else ""
        text = super().format(record)
        return text.replace("\n", f"\n    {request_id} ") if request_id else text


def configure_logging(port: int, log_format: str = "text") -> None:
    """Tornado's log format, with the instance's name on every line (docker logs mixes them);
    with LOG_FORMAT=json, one JSON object per record (python-json-logger)."""
    handler = logging.StreamHandler()
    handler.addFilter(RequestIdFilter())
    if log_format == "json":
        from pythonjsonlogger.json import JsonFormatter

        handler.setFormatter(
            JsonFormatter(
                "{level}{message}{module}{lineno}{request_id}",
                style="{",
                static_fields={"source": f"tornado-{port}"},
                # ISO 8601 in UTC with microseconds, in the field every source calls "time".
                timestamp="time",
            )
        )
    else:
        handler.setFormatter(
            TextFormatter(
                fmt=f"%(color)s[%(levelname)1.1s %(asctime)s tornado-{port} "
                "%(module)s:%(lineno)d]%(end_color)s %(request_tag)s%(message)s"
            )
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    # nginx's access log is the one record of every request; Tornado's own per-request INFO lines
    # would cost throughput and duplicate it. Warnings and errors (4xx/5xx) are still logged.
    tornado.log.access_log.setLevel(logging.WARNING)
