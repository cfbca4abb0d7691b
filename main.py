"""The application: edit it, or replace it with your own and point APP at it (README: Bring your
app).

    python main.py --port=8000

runs it alone on 127.0.0.1:8000 the way the bundle runs each instance (tornado_bundle.runner:
graceful drain on SIGTERM, loopback only). In the image, Supervisor starts one instance per port
and nginx balances across them.
"""

import tornado.web


class HelloHandler(tornado.web.RequestHandler):
    def get(self) -> None:
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.write("Hello, Tornado\n")


def make_app() -> tornado.web.Application:
    # The bundle adds /healthz for its health checks unless the app routes that path itself.
    return tornado.web.Application([(r"/", HelloHandler)])


if __name__ == "__main__":
    from tornado_bundle.runner import main

    raise SystemExit(main(app_factory=make_app))
