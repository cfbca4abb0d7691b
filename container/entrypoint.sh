#!/bin/sh
# Runs the numbered hooks in /docker-entrypoint.d (validate the environment, render the nginx
# site, test it), then hands PID 1 to the command. Hooks run only for the default command, so
# `docker run IMAGE sh` gets a plain shell. A failing hook stops the container before any
# process starts.
set -eu

me=$(basename "$0")

case "$*" in
*supervisord*)
    for hook in /docker-entrypoint.d/*.sh; do
        [ -x "$hook" ] || continue
        "$hook"
    done
    echo "$me: configuration complete; starting supervisord"
    ;;
esac

exec "$@"
