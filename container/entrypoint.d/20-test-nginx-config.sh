#!/bin/sh
# Refuses to start with an nginx configuration that nginx itself rejects, printing nginx's reason.
set -eu
me=$(basename "$0")
if ! output=$(nginx -t -q -e stderr 2>&1); then
    bundle-log "$me" error "error: nginx rejects its configuration: $(echo "$output" | tr "\n" " ")"
    exit 1
fi
