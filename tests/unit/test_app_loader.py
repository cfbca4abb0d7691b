"""Unit tests of tornado_bundle/app_loader.py: APP=module:callable, every way it can be wrong."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import tornado.web

from tornado_bundle.app_loader import AppError, load_app
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


@pytest.mark.parametrize("spec", ["good_app:make_app", "good_app:Demo", "good_app:application"])
def test_a_function_a_subclass_or_an_instance_gives_an_application(
    app_dir: Path, spec: str
) -> None:
    assert isinstance(load_app(spec), tornado.web.Application)


def test_the_default_is_main_make_app() -> None:
    assert parse({}).app == "main:make_app"
    assert parse({"APP": "pkg.mod:factory"}).app == "pkg.mod:factory"


@pytest.mark.parametrize(
    ("spec", "reason"),
    [
        ("good_app", "not of the form module:callable, e.g. main:make_app"),
        ("good_app:", "not of the form module:callable"),
        ("good-app:make_app", "not of the form module:callable"),
        ("good_app:make_app()", "not of the form module:callable"),
        ("no_such_module:make_app", "no module named 'no_such_module' in "),
        ("good_app:missing", "module 'good_app' has no attribute 'missing'"),
        ("good_app:not_an_app", "'not_an_app' is a int, not a callable"),
        ("good_app:returns_a_dict", "returns_a_dict() returned a dict, not a tornado.web.App"),
        ("good_app:needs_an_argument", "calling needs_an_argument() failed: TypeError: "),
        ("good_app:raises", "calling raises() failed: ZeroDivisionError: division by zero (at "),
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
        load_app(spec)
    message = str(error.value)
    assert message.startswith(f"APP={spec!r}: "), message
    assert reason in message
    assert "\n" not in message


def test_an_import_error_names_the_file_and_line(app_dir: Path) -> None:
    with pytest.raises(AppError) as error:
        load_app("broken_app:make_app")
    assert f"(at {app_dir / 'broken_app.py'}:2)" in str(error.value)
