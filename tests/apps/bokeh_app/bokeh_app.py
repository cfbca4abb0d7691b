"""APP=bokeh_app:make_app: a Bokeh server app (Bokeh's BokehTornado, a tornado.web.Application)
in the bundle, the way Bokeh's own Server sets it up: initialize()d with the loop that serves it,
start()ed, and stop()ped after the drain. The document: a button whose Python callback, run on
the server over the page's WebSocket, writes how often it was clicked."""

import contextlib
from collections.abc import AsyncIterator

from bokeh.application import Application
from bokeh.application.handlers.function import FunctionHandler
from bokeh.document import Document
from bokeh.layouts import column
from bokeh.models import Button, Div
from bokeh.server.tornado import BokehTornado
from tornado.ioloop import IOLoop


def document(doc: Document) -> None:
    clicks = Div(text="clicked 0 times", name="clicks")
    button = Button(label="Click", name="click")

    def clicked() -> None:
        clicks.text = f"clicked {int(clicks.text.split()[1]) + 1} times"

    button.on_click(clicked)
    doc.add_root(column(button, clicks))


@contextlib.asynccontextmanager
async def make_app() -> AsyncIterator[BokehTornado]:
    # WebSocket origins: Bokeh's own BOKEH_ALLOW_WS_ORIGIN, as with `bokeh serve`.
    app = BokehTornado({"/": Application(FunctionHandler(document))})
    app.initialize(IOLoop.current())
    app.start()
    yield app
    app.stop()
