#!/bin/sh
# The seed's command. On the host network (`make bench`), its fixed ports (nginx 80, Tornado 8000
# and 8001) move to LISTEN_PORT, INSTANCE_BASE_PORT and the port after it, so that they cannot
# clash with the host's; its configuration is otherwise as the walkthrough wrote it.
set -eu
if [ -n "${LISTEN_PORT:-}" ]; then
    first=$INSTANCE_BASE_PORT
    second=$((first + 1))
    sed -i "s/listen 80;/listen $LISTEN_PORT;/; s/:8000;/:$first;/; s/:8001;/:$second;/" \
        /etc/nginx/sites-enabled/tornado.conf
    sed -i "s/8000/$first/g; s/8001/$second/g" /etc/supervisor/supervisord.conf
fi
exec supervisord -c /etc/supervisor/supervisord.conf
