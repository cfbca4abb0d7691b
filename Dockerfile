# The Tornado bundle: Supervisor (PID 1) runs WORKERS Tornado instances and nginx, and nginx
# balances port 80 across them. Everything runs as a fixed non-root user.
#
# BASE_IMAGE is pulled when a registry is reachable; otherwise `make base-image` builds the same
# name and tag from Debian's packages (base-image/build.sh).
ARG BASE_IMAGE=debian:trixie-slim

# --- venv: Python dependencies, built where pip and its caches can stay behind ---------------
FROM ${BASE_IMAGE} AS venv
SHELL ["/bin/sh", "-eu", "-c"]
# Debian packages are not pinned (DL3008): the suite is fixed by the base image and exact
# versions vanish from the archive with each security update, which would break every build.
# hadolint ignore=DL3008
RUN apt-get update; \
    # python3-venv brings ensurepip's pip; ca-certificates lets pip verify PyPI (and trusts any
    # CA certificates that the base image carries in /usr/local/share/ca-certificates).
    apt-get install -y --no-install-recommends python3 python3-venv ca-certificates; \
    rm -rf /var/lib/apt/lists/*
COPY requirements.txt /tmp/requirements.txt
RUN python3 -m venv /opt/venv; \
    PIP_CERT=/etc/ssl/certs/ca-certificates.crt /opt/venv/bin/pip install \
        --no-cache-dir --disable-pip-version-check --require-hashes --only-binary=:all: \
        -r /tmp/requirements.txt; \
    # pip is not needed to run the bundle: it stays behind with this stage. So do the packages'
    # own test suites (2.6 MB of tornado/test, supervisor/tests), which nothing imports.
    /opt/venv/bin/pip uninstall --yes --quiet pip; \
    rm -rf /opt/venv/lib/python3*/site-packages/tornado/test \
        /opt/venv/lib/python3*/site-packages/supervisor/tests

# --- the image ---------------------------------------------------------------------------------
FROM ${BASE_IMAGE}
SHELL ["/bin/sh", "-eu", "-c"]

LABEL org.opencontainers.image.title="tornado-bundle" \
      org.opencontainers.image.description="Tornado instances behind nginx under Supervisor, in one non-root image" \
      org.opencontainers.image.base.name="debian:trixie-slim"

# Debian's nginx and python3, current in trixie and trixie-security at build time. procps gives `ps` and
# `kill` for operating the container by hand. Debian's site files are removed: the bundle's
# nginx.conf includes only the rendered tornado.conf. The log symlinks send anything that opens
# nginx's default log paths (`nginx -t` before reading the config) to the container's output.
# Not pinned, for the reason given in the first stage.
# hadolint ignore=DL3008
RUN apt-get update; \
    apt-get install -y --no-install-recommends nginx python3 procps; \
    rm -rf /var/lib/apt/lists/* /var/log/apt/* /var/log/dpkg.log \
        /etc/nginx/sites-available /etc/nginx/sites-enabled /etc/nginx/conf.d \
        /etc/nginx/modules-enabled /var/www/html; \
    ln -sf /dev/stdout /var/log/nginx/access.log; \
    ln -sf /dev/stderr /var/log/nginx/error.log; \
    groupadd --system --gid 10001 tornado; \
    useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin tornado

COPY --from=venv /opt/venv /opt/venv
COPY container/nginx.conf /etc/nginx/nginx.conf
COPY tornado.conf /etc/nginx/templates/tornado.conf
COPY supervisord.conf /etc/supervisor/supervisord.conf
COPY container/entrypoint.sh /docker-entrypoint.sh
COPY container/entrypoint.d/ /docker-entrypoint.d/
COPY container/bin/ /usr/local/bin/
COPY main.py container/render_config.py container/supervisord_fail_fast.py /opt/bundle/
# Byte-code compiled at build time: the files are root-owned and read-only to the app user, so
# Python could never cache it at run time.
RUN python3 -m compileall -q /opt/bundle

ENV PATH="/opt/venv/bin:${PATH}" \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    WORKERS=2 \
    LB_METHOD=round_robin \
    LISTEN_PORT=80 \
    CLIENT_MAX_BODY_SIZE=1m \
    DIAGNOSTICS=off

# A fixed numeric uid (not a name) so that Kubernetes' runAsNonRoot can verify it. nginx binds
# port 80 without root because Docker sets net.ipv4.ip_unprivileged_port_start=0 in the
# container's network namespace.
USER 10001:10001
EXPOSE 80
# Through nginx to a Tornado instance: unhealthy when nginx can reach none of them.
HEALTHCHECK --interval=5s --timeout=3s --start-period=10s --retries=3 CMD ["healthcheck"]
ENTRYPOINT ["/docker-entrypoint.sh"]
CMD ["python", "/opt/bundle/supervisord_fail_fast.py", "-c", "/etc/supervisor/supervisord.conf"]
