"""An app whose import takes IMPORT_SECONDS (a model, a warm cache), then fails if IMPORT_FAILS is
set (tests/image/test_real_apps.py)."""

import os
import time

import tornado.web

time.sleep(float(os.environ.get("IMPORT_SECONDS", "30")))
if os.environ.get("IMPORT_FAILS"):
    raise RuntimeError("the model file is missing")


class Hello(tornado.web.RequestHandler):
    def get(self) -> None:
        self.write("loaded\n")


def make_app() -> tornado.web.Application:
    return tornado.web.Application([(r"/", Hello)])
