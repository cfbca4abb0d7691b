# The seed's app, as the classic "Tornado + Nginx + Supervisor" walkthrough has it: a hello world
# that logs every request at INFO. Kept as written there so the baseline cannot drift into
# being tuned.
import tornado.ioloop
import tornado.web
from tornado.options import define, options

define("port", default=8000, help="run on the given port", type=int)


class MainHandler(tornado.web.RequestHandler):
    def get(self):
        self.write("Hello, Tornado")


def main():
    options.parse_command_line()
    application = tornado.web.Application([(r"/", MainHandler)])
    application.listen(options.port)
    tornado.ioloop.IOLoop.current().start()


if __name__ == "__main__":
    main()
