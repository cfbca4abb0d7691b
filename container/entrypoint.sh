#!/bin/sh
# Runs the numbered hooks in /docker-entrypoint.d in order (validate the environment and render
# the nginx site, export what it derived, secrets from files, test the site), then hands PID 1
# to the command. A hook ending in .sh runs as a program; one ending in .envsh is sourced, so
# the variables it exports reach every process (as in nginx's official image). Hooks run only
# for the default command, so `docker run IMAGE sh` gets a plain shell. A failing hook stops
# the container before any process starts.
set -eu

me=$(basename "$0")

if [ "${1:-}" = "supervisord-fail-fast" ] || [ "${1:-}" = "supervisord" ]; then
    for hook in /docker-entrypoint.d/*; do
        [ -x "$hook" ] || continue
        # shellcheck source=/dev/null # the image's own hooks
        case "$hook" in
            *.envsh) . "$hook" ;;
            *.sh) "$hook" ;;
        esac
    done
    bundle-log "$me" info "configuration complete; starting $1"
fi

exec "$@"
