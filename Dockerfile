# The Tornado bundle: Supervisor (PID 1) runs WORKERS Tornado instances and nginx, and nginx
# balances port 80 across them. Everything runs as a fixed non-root user.
#
# BASE_IMAGE is pulled when a registry is reachable; otherwise `make base-image` builds the same
# name and tag from Debian's packages (base-image/build.sh).
ARG BASE_IMAGE=debian:trixie-slim

# --- builder: the venv with pip; your own image installs its dependencies here (README) -----
FROM ${BASE_IMAGE} AS builder
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
    # The packages' own test suites (2.6 MB of tornado/test, supervisor/tests): nothing imports them.
    rm -rf /opt/venv/lib/python3*/site-packages/tornado/test \
        /opt/venv/lib/python3*/site-packages/supervisor/tests

# --- venv: what the image gets of the builder ------------------------------------------------
FROM builder AS venv
SHELL ["/bin/sh", "-eu", "-c"]
# pip is not needed to run the bundle: it stays behind with the builder. The .pth file puts the
# bundle's package and /opt/app-packages (where an app image adds its own dependencies) on the
# venv's path, after its own site-packages.
RUN /opt/venv/bin/pip uninstall --yes --quiet pip; \
    site=$(/opt/venv/bin/python -c 'import sysconfig; print(sysconfig.get_path("purelib"))'); \
    printf '%s\n' /opt/tornado-bundle /opt/app-packages >"$site/tornado_bundle.pth"

# --- the image ---------------------------------------------------------------------------------
FROM ${BASE_IMAGE}
SHELL ["/bin/sh", "-eu", "-c"]
ARG BASE_IMAGE

LABEL org.opencontainers.image.title="tornado-bundle" \
      org.opencontainers.image.description="Tornado instances behind nginx under Supervisor, in one non-root image" \
      org.opencontainers.image.base.name="${BASE_IMAGE}"

# Debian's nginx and python3, current in trixie and trixie-security at build time. procps gives `ps` and
# `kill` for operating the container by hand; ca-certificates is the set of CAs an app's own
# HTTPS calls trust (tornado.httpclient, OAuth). Debian's site files are removed: the bundle's
# nginx.conf includes only the rendered tornado.conf. The log symlinks send anything that opens
# nginx's default log paths (`nginx -t` before reading the config) to the container's output.
# Not pinned, for the reason given in the first stage.
# hadolint ignore=DL3008
RUN apt-get update; \
    apt-get install -y --no-install-recommends nginx python3 procps ca-certificates; \
    # Build-time trust stays in the build: CA certificates that the base image carries from the
    # machine that built it (base-image/build.sh adds them for a TLS-intercepting proxy) were
    # needed by apt above, and are not trusted at run time: Debian's set only (README: Trust).
    rm -f /usr/local/share/ca-certificates/*.crt; \
    update-ca-certificates --fresh >/dev/null; \
    # Nothing here runs CPython's regression-test helpers or reads pydoc's help topics (2.5 MB),
    # nor Debian's changelogs (the copyright files stay).
    rm -rf /usr/lib/python3*/test /usr/lib/python3*/pydoc_data; \
    find /usr/share/doc -type f ! -name copyright -delete; \
    rm -rf /var/lib/apt/lists/* /var/log/apt/* /var/log/dpkg.log \
        /etc/nginx/sites-available /etc/nginx/sites-enabled /etc/nginx/conf.d \
        /etc/nginx/modules-enabled /var/www/html; \
    # Empty folders for your own nginx lines (README: nginx drop-ins).
    mkdir /etc/nginx/conf.d /etc/nginx/server.d; \
    ln -sf /dev/stdout /var/log/nginx/access.log; \
    ln -sf /dev/stderr /var/log/nginx/error.log; \
    groupadd --system --gid 10001 tornado; \
    useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin tornado; \
    # No setuid/setgid programs (su, mount, passwd, ...): nothing here changes user.
    find / -xdev -perm /6000 -type f -exec chmod a-s {} +

COPY --from=venv /opt/venv /opt/venv
COPY container/nginx/nginx.conf /etc/nginx/nginx.conf
# Every other nginx line: templates that the start hook renders into /tmp/nginx.
COPY tornado.conf container/nginx/*.template /etc/nginx/templates/
COPY supervisord.conf /etc/supervisor/supervisord.conf
COPY container/entrypoint.sh /docker-entrypoint.sh
COPY container/entrypoint.d/ /docker-entrypoint.d/
COPY container/bin/ /usr/local/bin/
COPY tornado_bundle/ /opt/tornado-bundle/tornado_bundle/
# The app: main.py here, or your own files in an image built FROM this one (README).
COPY main.py /app/
# Byte-code compiled at build time: the files are root-owned and read-only to the app user, so
# Python could never cache it at run time.
RUN python3 -m compileall -q /opt/tornado-bundle /app
WORKDIR /app

# No setting's default here: tornado_bundle/settings.py owns them, and supervisord.conf and the
# healthcheck read what the start hook derived from them (/tmp/tornado-bundle/bundle.env).
ENV PATH="/opt/venv/bin:${PATH}" \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1

# A fixed numeric uid (not a name) so that Kubernetes' runAsNonRoot can verify it. nginx binds
# port 80 without root because Docker sets net.ipv4.ip_unprivileged_port_start=0 in the
# container's network namespace.
USER 10001:10001
# 80: HTTP (LISTEN_PORT); 443: HTTPS when a certificate is mounted (TLS_PORT); 9145: metrics
# (METRICS_PORT). The defaults are decided in tornado_bundle/settings.py; tests/unit/test_names.py
# checks that these agree.
EXPOSE 80 443 9145
# Through nginx to a Tornado instance: unhealthy when nginx can reach none of them. Failures in
# the first 60 s (STARTUP_TIMEOUT's default: an app may load that long) do not count; the first
# success ends that grace at once.
HEALTHCHECK --interval=5s --timeout=3s --start-period=60s --retries=3 CMD ["healthcheck"]
ENTRYPOINT ["/docker-entrypoint.sh"]
CMD ["supervisord-fail-fast", "-c", "/etc/supervisor/supervisord.conf"]
