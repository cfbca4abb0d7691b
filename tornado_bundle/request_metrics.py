"""Request counts and durations of one instance, for the metrics endpoint (metrics.py), in
prometheus_client's multiprocess files. The labels are bounded: a method outside KNOWN_METHODS is
"other", a handler is its class (as many as the app has routes), a status is a status."""

from __future__ import annotations

import os
from typing import Any

import tornado.web

from tornado_bundle.names import KNOWN_METHODS, METRICS_DIR


def instrument(app: tornado.web.Application) -> None:
    """Request counts and durations by method, handler class and status, in prometheus_client's
    multiprocess files, which the metrics endpoint adds up across instances (metrics.py)."""
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(METRICS_DIR)
    # The start hook makes it; an instance started by hand (python main.py) makes it itself.
    METRICS_DIR.mkdir(parents=True, exist_ok=True)
    # After the variable: prometheus_client picks its file-backed values at import.
    from prometheus_client import Counter, Histogram

    requests = Counter(
        "tornado_requests", "Requests answered", ["method", "handler", "status"], registry=None
    )
    durations = Histogram(
        "tornado_request_duration_seconds",
        "Time from the request's arrival to its answer",
        ["method", "handler"],
        registry=None,
    )
    log_request = app.log_request
    # (method, handler class, status) -> its two series: labels() validates on every call.
    series: dict[tuple[str, type, int], tuple[Any, Any]] = {}

    def measured(handler: tornado.web.RequestHandler) -> None:
        request = handler.request
        # The label, not the raw method, is the key: a client choosing a new method name per
        # request must not add a series (and its memory) per request.
        method = request.method if request.method in KNOWN_METHODS else "other"
        key = (method, type(handler), handler.get_status())
        if key not in series:
            # A handler class, not a path: the label set stays as small as the app's routes.
            name = key[1].__name__
            series[key] = (
                requests.labels(method, name, str(key[2])),
                durations.labels(method, name),
            )
        count, duration = series[key]
        count.inc()
        duration.observe(request.request_time())
        log_request(handler)

    app.log_request = measured  # type: ignore[method-assign]
