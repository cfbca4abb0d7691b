"""APP=jupyter_app:make_app: JupyterLab on Jupyter Server in the bundle. Jupyter's ServerApp
builds its tornado.web.Application on the running loop (initialize without an HTTP server of
its own: the bundle's instance serves it), and after the drain shuts its kernels down, as its
own stop does. Notebooks live in NOTEBOOK_DIR; the token is Jupyter's own JUPYTER_TOKEN."""

import contextlib
import os
from collections.abc import AsyncIterator

import tornado.web
from jupyter_server.serverapp import ServerApp


@contextlib.asynccontextmanager
async def make_app() -> AsyncIterator[tornado.web.Application]:
    notebooks = os.environ.get("NOTEBOOK_DIR", "/tmp/notebooks")
    os.makedirs(notebooks, exist_ok=True)
    server = ServerApp()
    server.initialize(argv=[f"--ServerApp.root_dir={notebooks}"], new_httpserver=False)
    yield server.web_app
    await server._cleanup()
