"""Unit tests of tornado_bundle/app_loader.py: APP=module:attribute in each of its four forms,
on the running loop, and every way it can be wrong."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import tornado.web

from tornado_bundle.app_loader import AppError, opened
from tornado_bundle.settings import parse

MODULES = {
    "good_app": """
import tornado.web
class Demo(tornado.web.Application):
    def __init__(self):
        super().__init__([])
def make_app():
    return tornado.web.Application([])
application = tornado.web.Application([])
not_an_app = 42
def returns_a_dict():
    return {}
def needs_an_argument(debug):
    return tornado.web.Application([])
def raises():
    return 1 / 0
import asyncio, contextlib
import tornado.ioloop
EVENTS = []
async def make_app_async():
    await asyncio.sleep(0)
    app = tornado.web.Application([])
    # What a sync factory or module code binds to the current loop must be the serving one.
    app.loop = asyncio.get_running_loop()
    return app
def make_app_on_loop():
    app = tornado.web.Application([])
    app.loop = tornado.ioloop.IOLoop.current().asyncio_loop
    return app
@contextlib.asynccontextmanager
async def lifespan():
    EVENTS.append("enter")
    yield tornado.web.Application([])
    EVENTS.append("exit")
async def async_raises():
    await asyncio.sleep(0)
    raise KeyError("pool")
@contextlib.asynccontextmanager
async def enter_raises():
    raise OSError("database down")
    yield
@contextlib.asynccontextmanager
async def exit_raises():
    yield tornado.web.Application([])
    raise RuntimeError("pool did not close")
async def returns_none():
    return None
""",
    "broken_app": "import tornado.web\nvalue = int('twelve')\n",
    "needs_a_package": "import no_such_package_xyz\n",
}


@pytest.fixture
def app_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    for name, source in MODULES.items():
        (tmp_path / f"{name}.py").write_text(source)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    for name in MODULES:
        sys.modules.pop(name, None)


def load(spec: str) -> tornado.web.Application:
    """What an instance does, without serving: the app, entered and left on a running loop."""

    async def enter_and_leave() -> tornado.web.Application:
        async with opened(spec) as app:
            return app

    return asyncio.run(enter_and_leave())


@pytest.mark.parametrize(
    "spec",
    [
        "good_app:make_app",
        "good_app:Demo",
        "good_app:application",
        "good_app:make_app_async",
        "good_app:lifespan",
    ],
)
def test_every_form_gives_an_application(app_dir: Path, spec: str) -> None:
    assert isinstance(load(spec), tornado.web.Application)


@pytest.mark.parametrize("spec", ["good_app:make_app_async", "good_app:make_app_on_loop"])
def test_the_app_is_made_on_the_loop_that_serves_it(app_dir: Path, spec: str) -> None:
    async def made_on_this_loop() -> bool:
        async with opened(spec) as app:
            return app.loop is asyncio.get_running_loop()  # type: ignore[attr-defined]

    assert asyncio.run(made_on_this_loop())


def test_an_async_context_manager_is_entered_before_serving_and_left_after(
    app_dir: Path,
) -> None:
    async def serve() -> list[str]:
        async with opened("good_app:lifespan"):
            seen = list(sys.modules["good_app"].EVENTS)  # type: ignore[attr-defined]
        return seen

    assert asyncio.run(serve()) == ["enter"]
    assert sys.modules["good_app"].EVENTS == ["enter", "exit"]  # type: ignore[attr-defined]


def test_the_default_is_main_make_app() -> None:
    assert parse({}).app == "main:make_app"
    assert parse({"APP": "pkg.mod:factory"}).app == "pkg.mod:factory"


@pytest.mark.parametrize(
    ("spec", "reason"),
    [
        ("good_app", "not of the form module:attribute, e.g. main:make_app"),
        ("good_app:", "not of the form module:attribute"),
        ("good-app:make_app", "not of the form module:attribute"),
        ("good_app:make_app()", "not of the form module:attribute"),
        ("no_such_module:make_app", "no module named 'no_such_module' in "),
        ("good_app:missing", "module 'good_app' has no attribute 'missing'"),
        ("good_app:not_an_app", "not_an_app is a int, not a callable"),
        ("good_app:returns_a_dict", "returns_a_dict() gave a dict, not a tornado.web.App"),
        ("good_app:needs_an_argument", "calling needs_an_argument() failed: TypeError: "),
        ("good_app:raises", "calling raises() failed: ZeroDivisionError: division by zero (at "),
        ("good_app:async_raises", "awaiting async_raises() failed: KeyError: 'pool' (at "),
        (
            "good_app:enter_raises",
            "entering enter_raises() failed: OSError: database down (at ",
        ),
        (
            "good_app:exit_raises",
            "leaving exit_raises() failed: RuntimeError: pool did not close (at ",
        ),
        ("good_app:returns_none", "returns_none() gave a NoneType, not a tornado.web"),
        (
            "broken_app:make_app",
            "importing 'broken_app' failed: ValueError: invalid literal for int() with base 10:",
        ),
        (
            "needs_a_package:make_app",
            "importing 'needs_a_package' failed: ModuleNotFoundError: No module named "
            "'no_such_package_xyz' (at ",
        ),
    ],
)
def test_a_bad_app_is_one_line_naming_app_the_value_and_the_reason(
    app_dir: Path, spec: str, reason: str
) -> None:
    with pytest.raises(AppError) as error:
        load(spec)
    message = str(error.value)
    assert message.startswith(f"APP={spec!r}: "), message
    assert reason in message
    assert "\n" not in message


def test_an_import_error_names_the_file_and_line(app_dir: Path) -> None:
    with pytest.raises(AppError) as error:
        load("broken_app:make_app")
    assert f"(at {app_dir / 'broken_app.py'}:2)" in str(error.value)
