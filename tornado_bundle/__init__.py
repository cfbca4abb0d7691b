"""The bundle's own Python: what runs any Tornado app behind nginx under Supervisor.

runner      serves the app that APP names (or main.py's) on --port, with the graceful drain
app_loader  APP=module:callable -> a tornado.web.Application (and its static files), or one error
config      environment -> validated settings -> the rendered nginx files
start       the start hook: validates, loads the app once, writes the nginx files into /tmp
fail_fast   supervisord as PID 1, exiting 1 when a program cannot stay up
diagnostics DIAGNOSTICS=on endpoints for tests and demos
"""
