#!/bin/sh
# Runs the numbered hooks in /docker-entrypoint.d (validate the environment and the app, render
# the nginx site, test it), then hands PID 1 to the command. Hooks run only for the default
# command, so `docker run IMAGE sh` gets a plain shell. A failing hook stops the container
# before any process starts.
set -eu

me=$(basename "$0")

if [ "${1:-}" = "supervisord-fail-fast" ] || [ "${1:-}" = "supervisord" ]; then
    for hook in /docker-entrypoint.d/*.sh; do
        [ -x "$hook" ] || continue
        "$hook"
    done
    # What the start hook derived from the settings, for supervisord.conf (BUNDLE_* values).
    set -a
    # shellcheck source=/dev/null # written by the start hook (tornado_bundle/start.py)
    . /tmp/tornado-bundle/bundle.env
    set +a
    bundle-log "$me" info "configuration complete; starting $1"
fi

exec "$@"
