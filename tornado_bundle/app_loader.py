"""APP=module:attr -> a tornado.web.Application on the instance's own running loop, or one line
that says why not.

`attr` is, in every form Tornado's docs and demos write an app:
(a) an Application (an instance at module level), or an Application subclass with a
    no-argument constructor (as in the demos);
(b) a function that returns one;
(c) an `async def` that returns one, awaited on the instance's running loop (pools and clients
    made there belong to the loop that serves);
(d) a function that returns an async context manager (`@contextlib.asynccontextmanager`) that
    yields one: entered before the instance listens, exited after its drain.
The module is imported on the running loop too, by name, from /app (the image's WORKDIR, on
sys.path), so anything it binds to IOLoop.current() lands on the loop that runs. Only an
instance loads the app; the start hook never imports it.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import os
import sys
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable

import tornado.web

from tornado_bundle.nginx import StaticFiles
from tornado_bundle.settings import APP_SPEC, NGINX_SAFE_PATH


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


def find(spec: str) -> object:
    """Imports `module:attr` and returns the attribute, not called yet; raises AppError."""
    if not APP_SPEC.fullmatch(spec):
        raise AppError(spec, "not of the form module:attribute, e.g. main:make_app")
    module_name, attribute = spec.split(":")
    module = _import(spec, module_name)
    try:
        return getattr(module, attribute)
    except AttributeError:
        raise AppError(spec, f"module {module_name!r} has no attribute {attribute!r}") from None


def _checked(spec: str, what: str, app: object) -> tornado.web.Application:
    if not isinstance(app, tornado.web.Application):
        raise AppError(spec, f"{what} gave a {type(app).__name__}, not a tornado.web.Application")
    return app


@contextlib.asynccontextmanager
async def opened(spec: str, target: object | None = None) -> AsyncIterator[tornado.web.Application]:
    """The Application of `target` (or of what `spec` names), in any of the four forms; for an
    async context manager, exited when the block ends. Call it on the running loop. Raises
    AppError for anything the app raises before it yields."""
    target = find(spec) if target is None else target
    if isinstance(target, tornado.web.Application):
        yield target
        return
    if not callable(target):
        raise AppError(spec, f"{_name(target, spec)} is a {type(target).__name__}, not a callable")
    called = f"{_name(target, spec)}()"
    made = _call(spec, f"calling {called}", target)
    if inspect.isawaitable(made):
        made = await _await(spec, f"awaiting {called}", made)
    if not (hasattr(made, "__aenter__") and hasattr(made, "__aexit__")):
        yield _checked(spec, called, made)
        return
    manager: contextlib.AbstractAsyncContextManager[object] = made  # type: ignore[assignment]
    app = _checked(
        spec, f"entering {called}", await _await(spec, f"entering {called}", manager.__aenter__())
    )
    try:
        yield app
    except BaseException:
        # The instance failed while serving: the app's own exit sees why, as in `async with`.
        if not await manager.__aexit__(*sys.exc_info()):
            raise
    else:
        await _await(spec, f"leaving {called}", manager.__aexit__(None, None, None))


def _call(spec: str, what: str, call: Callable[[], object]) -> object:
    try:
        return call()
    except Exception as error:  # noqa: BLE001 - any error of the user's code is reported
        raise AppError(spec, f"{what} failed: {_last_traceback_line(error)}") from None


async def _await(spec: str, what: str, awaitable: Awaitable[object]) -> object:
    try:
        return await awaitable
    except Exception as error:  # noqa: BLE001 - any error of the user's code is reported
        raise AppError(spec, f"{what} failed: {_last_traceback_line(error)}") from None


def _name(target: object, spec: str) -> str:
    """The function's or class's own name, else the attribute APP names."""
    return getattr(target, "__name__", spec.rpartition(":")[2])


def static_files(app: tornado.web.Application, spec: str) -> StaticFiles | None:
    """The app's static_path and static_url_prefix (Tornado's own settings), checked for nginx;
    None when the app has no static_path. Raises AppError."""
    path = app.settings.get("static_path")
    if not path or not isinstance(path, str | os.PathLike):
        # None, or what only the app's own static handler understands (Jupyter: a list of
        # folders): Tornado serves those URLs itself.
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
