#!/bin/sh
# The blog's migration, run by the bundle once before any instance starts (the image's
# /app/prestart.sh): the demo's schema when its tables are not there yet, and a first entry.
set -eu
exec python /app/migrate.py
