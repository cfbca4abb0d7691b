"""APP=jupyter_app:make_app: JupyterLab on Jupyter Server in the bundle. Jupyter's ServerApp
builds its tornado.web.Application on the running loop (initialize without an HTTP server of
its own: the bundle's instance serves it), and after the drain shuts its kernels down, as its
own stop does. Notebooks live in NOTEBOOK_DIR; the token is Jupyter's own JUPYTER_TOKEN."""

import contextlib
import os
from collections.abc import AsyncIterator

# pip --target put Jupyter's data and config files (JupyterLab's pages, its server extension)
# under /opt/app-packages; what Jupyter writes goes to /tmp, the one writable path. Set before
# Jupyter reads them, as an image's ENV would.
for name, path in {
    "JUPYTER_PATH": "/opt/app-packages/share/jupyter",
    "JUPYTER_CONFIG_PATH": "/opt/app-packages/etc/jupyter",
    "JUPYTERLAB_DIR": "/opt/app-packages/share/jupyter/lab",
    "JUPYTER_CONFIG_DIR": "/tmp/jupyter/config",
    "JUPYTER_DATA_DIR": "/tmp/jupyter/data",
    "JUPYTER_RUNTIME_DIR": "/tmp/jupyter/runtime",
    "IPYTHONDIR": "/tmp/ipython",
}.items():
    os.environ.setdefault(name, path)

import tornado.web  # noqa: E402 - after the environment Jupyter reads at import
from jupyter_server.serverapp import ServerApp  # noqa: E402


@contextlib.asynccontextmanager
async def make_app() -> AsyncIterator[tornado.web.Application]:
    notebooks = os.environ.get("NOTEBOOK_DIR", "/tmp/notebooks")
    os.makedirs(notebooks, exist_ok=True)
    server = ServerApp()
    server.initialize(argv=[f"--ServerApp.root_dir={notebooks}"], new_httpserver=False)
    yield server.web_app
    await server._cleanup()
