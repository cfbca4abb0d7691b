"""APP=module:callable -> a tornado.web.Application, or one line that says why not.

The callable is a function that returns an Application (`main:make_app`) or an Application
subclass with a no-argument constructor (as in Tornado's demos); an Application instance at
module level is taken as it is. The module is imported by name at run time from /app (the
image's WORKDIR, on sys.path), so nothing imports the user's code statically.
"""

from __future__ import annotations

import importlib
import os
import re
import sys
import traceback

import tornado.web

from tornado_bundle.nginx import StaticFiles
from tornado_bundle.settings import NGINX_SAFE_PATH

APP_SPEC = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*")


class AppError(Exception):
    """One line for the user: APP, its value and the reason."""

    def __init__(self, spec: str, reason: str) -> None:
        super().__init__(f"APP={spec!r}: {reason}")


def _last_traceback_line(error: BaseException) -> str:
    """`ValueError: boom (at /app/main.py:12)`: the error and where the user's code raised it."""
    frames = traceback.extract_tb(error.__traceback__)
    where = f" (at {frames[-1].filename}:{frames[-1].lineno})" if frames else ""
    text = traceback.format_exception_only(type(error), error)[-1].strip()
    return text.replace("\n", " ") + where


def _import(spec: str, module_name: str) -> object:
    if os.getcwd() not in sys.path and "" not in sys.path:
        # Under `python -m` or a console script the working directory (/app) may be missing.
        sys.path.insert(0, os.getcwd())
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name == module_name or module_name.startswith(f"{error.name}."):
            raise AppError(spec, f"no module named {error.name!r} in {os.getcwd()}") from None
        raise AppError(
            spec, f"importing {module_name!r} failed: {_last_traceback_line(error)}"
        ) from None
    except Exception as error:  # noqa: BLE001 - any error of the user's module is reported
        raise AppError(
            spec, f"importing {module_name!r} failed: {_last_traceback_line(error)}"
        ) from None


def load_app(spec: str) -> tornado.web.Application:
    """Imports `module:callable` and returns the Application it gives; raises AppError."""
    if not APP_SPEC.fullmatch(spec):
        raise AppError(spec, "not of the form module:callable, e.g. main:make_app")
    module_name, attribute = spec.split(":")
    module = _import(spec, module_name)
    try:
        target = getattr(module, attribute)
    except AttributeError:
        raise AppError(spec, f"module {module_name!r} has no attribute {attribute!r}") from None
    if isinstance(target, tornado.web.Application):
        return target
    if not callable(target):
        raise AppError(spec, f"{attribute!r} is a {type(target).__name__}, not a callable")
    try:
        app = target()
    except Exception as error:  # noqa: BLE001 - any error of the user's callable is reported
        raise AppError(
            spec, f"calling {attribute}() failed: {_last_traceback_line(error)}"
        ) from None
    if not isinstance(app, tornado.web.Application):
        raise AppError(
            spec, f"{attribute}() returned a {type(app).__name__}, not a tornado.web.Application"
        )
    return app


def static_files(app: tornado.web.Application, spec: str) -> StaticFiles | None:
    """The app's static_path and static_url_prefix (Tornado's own settings), checked for nginx;
    None when the app has no static_path. Raises AppError."""
    path = app.settings.get("static_path")
    if not path:
        return None
    prefix = app.settings.get("static_url_prefix", "/static/")
    resolved = os.path.abspath(path)
    if not os.path.isdir(resolved):
        raise AppError(spec, f"static_path {resolved!r} is not a directory")
    if not NGINX_SAFE_PATH.fullmatch(resolved):
        raise AppError(spec, f"static_path {resolved!r} has characters nginx cannot take here")
    if not (NGINX_SAFE_PATH.fullmatch(prefix) and prefix.endswith("/") and prefix != "/"):
        raise AppError(
            spec,
            f"static_url_prefix {prefix!r} is not a path that starts and ends with '/' "
            "(and is not '/')",
        )
    return StaticFiles(url_prefix=prefix, path=resolved.rstrip("/") + "/")
