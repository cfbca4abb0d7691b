#!/bin/sh
# Validates WORKERS, LB_METHOD, ... and writes the nginx site into /tmp/nginx (see tornado.conf).
# Idempotent, and writes nothing outside /tmp, so it works with a read-only root filesystem.
set -eu
exec /opt/venv/bin/python /opt/bundle/render_config.py
