#!/bin/sh
# Runs the app's own one-time step before any instance starts (a database migration, a cache
# warm-up): /app/prestart.sh, as the image's user, with the validated environment and the
# secrets from files. Not there: nothing to do. A non-zero exit stops the container with exit
# code 1 and one line that names it.
set -eu
me=$(basename "$0" .sh)
script=/app/prestart.sh
if [ ! -f "$script" ]; then
    exit 0
fi
bundle-log "$me" info "running $script"
status=0
if [ -x "$script" ]; then
    "$script" || status=$?
else
    # Not executable (a COPY that lost the mode): run it with sh, as it would be anyway.
    sh "$script" || status=$?
fi
if [ "$status" -ne 0 ]; then
    bundle-log "$me" error "error: $script exited with status $status (its own lines above say why); nothing was started"
    exit 1
fi
bundle-log "$me" info "$script done"
