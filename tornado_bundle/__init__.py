"""The bundle's own Python: what runs any Tornado app behind nginx under Supervisor.

Shared by every process (import nothing of Tornado):
names           paths, Supervisor's names, the instances' address, the known methods
settings        the settings table; the environment parsed once into a frozen Settings
certificates    TLS_CERT_FILE and TLS_KEY_FILE checked before nginx gets them
limits          open files and listen queue, and the connection slots they allow
files           atomic writes under /tmp

The start hook (docker-entrypoint.d/10-render-config.sh), which never imports the app:
start           parses the settings, writes every file under /tmp
nginx           the nginx files from the templates: values, and which lines and files apply

Each Tornado instance (supervisord.conf [program:tornado]):
app_loader      APP=module:attribute -> a tornado.web.Application on the running loop, in any
                of its four forms (and its static files, for nginx)
runner          loads the app, writes its static-files location, adds what the bundle adds,
                listens, serves; after the drain, lets the app close
drain           the graceful drain on SIGTERM
loop_monitor    BLOCKED_LOOP_WARNING: the stack of what blocks the event loop
request_metrics request counts and durations for the metrics endpoint
instance_logs   the instance's log format and the request ID
diagnostics     DIAGNOSTICS=on endpoints for tests and demos

supervisord's own process (PID 1):
fail_fast       supervisord, exiting 1 when a program cannot stay up
watchdog        restarts hung or oversized instances, and ones that never start
logs            the programs' output relayed to the container's, in one format
metrics         the Prometheus endpoint on METRICS_PORT
"""
