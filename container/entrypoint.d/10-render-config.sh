#!/bin/sh
# Validates WORKERS, LB_METHOD, ... (never importing the app), and writes the nginx site
# and the instances' ports into /tmp (see tornado_bundle/start.py). Idempotent, and writes
# nothing outside /tmp, so it works with a read-only root filesystem.
set -eu
exec /opt/venv/bin/python -m tornado_bundle.start
