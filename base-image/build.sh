#!/bin/sh
# Builds IMAGE (default debian:trixie-slim) from Debian's own packages and `docker import`s it under
# that exact name, for hosts that cannot pull from a registry (air-gapped, or behind a proxy that
# only lets package mirrors through). The result is slimmed like the official image, and it trusts
# the build host's CA certificates so that apt and pip inside `docker build` work behind a
# TLS-intercepting proxy. Needs root, debootstrap and a Docker engine.
set -eu

log() { printf '%s: %s\n' "$(basename "$0")" "$*" >&2; }
die() { log "error: $*"; exit 1; }

image=${1:-debian:trixie-slim}
suite=${image#*:}
suite=${suite%-slim}
host_ca_bundle=${HOST_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}

[ "$(id -u)" = 0 ] || die "must run as root (debootstrap needs it); try: sudo $0 $image"
command -v debootstrap >/dev/null || die "debootstrap is not installed; on Debian/Ubuntu: apt-get install -y debootstrap"
docker info >/dev/null 2>&1 || die "no Docker engine answers 'docker info'"

# The first Debian mirror that the host's own apt uses: a host that can install packages reaches it.
host_mirror() {
    {
        sed -n 's/^URIs:[[:space:]]*//p' /etc/apt/sources.list.d/*.sources 2>/dev/null
        sed -n 's/^deb[[:space:]]\{1,\}\(\[[^]]*\][[:space:]]\{1,\}\)\{0,1\}\([^[:space:]]*\).*/\2/p' \
            /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null
    } | tr ' ' '\n' | grep -E '^https?://.*/debian/?$' | head -n 1
}
mirror=${DEBIAN_MIRROR:-$(host_mirror)}
mirror=${mirror:-http://deb.debian.org/debian}
security_mirror=${DEBIAN_SECURITY_MIRROR:-${mirror%/debian*}/debian-security}

workdir=$(mktemp -d)
trap 'rm -rf "$workdir"' EXIT
rootfs=$workdir/rootfs

log "debootstrap --variant=minbase $suite from $mirror"
# The packages' signatures are checked against Debian's archive keys (debian-archive-keyring).
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
[ -r "$keyring" ] || die "$keyring is missing; install the debian-archive-keyring package"
debootstrap --variant=minbase --keyring="$keyring" "$suite" "$rootfs" "$mirror" >"$workdir/debootstrap.log" 2>&1 \
    || { tail -n 20 "$workdir/debootstrap.log" >&2; die "debootstrap failed (full log above)"; }

# The same minimising configuration as the official image (debuerreotype's slim variant).
cat >"$rootfs/etc/dpkg/dpkg.cfg.d/docker" <<'CFG'
# Documentation, manuals and translations are not needed in a container.
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
CFG
cat >"$rootfs/etc/apt/apt.conf.d/docker-clean" <<'CFG'
# Keep downloaded .debs and the package cache out of image layers.
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
CFG
printf 'Acquire::Languages "none";\n' >"$rootfs/etc/apt/apt.conf.d/docker-no-languages"
printf 'Acquire::GzipIndexes "true";\n' >"$rootfs/etc/apt/apt.conf.d/docker-gzip-indexes"
printf 'Apt::AutoRemove::SuggestsImportant "false";\n' >"$rootfs/etc/apt/apt.conf.d/docker-autoremove-suggests"
# Package scripts must not try to start services inside an image build.
printf '#!/bin/sh\nexit 101\n' >"$rootfs/usr/sbin/policy-rc.d"
chmod 755 "$rootfs/usr/sbin/policy-rc.d"

rm -f "$rootfs/etc/apt/sources.list"
cat >"$rootfs/etc/apt/sources.list.d/debian.sources" <<CFG
Types: deb
URIs: $mirror
Suites: $suite $suite-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: $security_mirror
Suites: $suite-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
CFG

# One file per certificate, where update-ca-certificates (run by the ca-certificates package that
# an image build installs) adds them to the system bundle.
if [ -r "$host_ca_bundle" ]; then
    mkdir -p "$rootfs/usr/local/share/ca-certificates"
    awk -v dir="$rootfs/usr/local/share/ca-certificates" '
        /-----BEGIN CERTIFICATE-----/ { n++; file = sprintf("%s/build-host-%03d.crt", dir, n) }
        file { print > file }
        /-----END CERTIFICATE-----/ { close(file); file = "" }
        END { print n " certificates" > "/dev/stderr" }
    ' "$host_ca_bundle"
    log "added the build host's CA certificates from $host_ca_bundle"
else
    log "no CA bundle at $host_ca_bundle; the image trusts only what its packages bring"
fi

# What the excludes above would have kept out, and what the install left behind.
find "$rootfs/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
find "$rootfs/usr/share/doc" -mindepth 1 -type d -empty -delete
rm -rf "$rootfs/usr/share/man/"* "$rootfs/usr/share/info/"* "$rootfs/usr/share/lintian" "$rootfs/usr/share/linda"
find "$rootfs/usr/share/locale" -mindepth 1 -maxdepth 1 -not -name locale.alias -exec rm -rf {} +
rm -rf "$rootfs/var/lib/apt/lists/"* "$rootfs/var/cache/apt/"* "$rootfs/var/cache/debconf/"*-old \
    "$rootfs/var/log/"* "$rootfs/tmp/"* "$rootfs/root/.cache"
# Container runtimes provide these; a copy of the build host's would leak into the image.
: >"$rootfs/etc/hostname"
: >"$rootfs/etc/resolv.conf"
rm -f "$rootfs/etc/machine-id" && : >"$rootfs/etc/machine-id"

log "docker import as $image"
tar --numeric-owner -C "$rootfs" -c . \
    | docker import --change 'CMD ["bash"]' --message "debootstrap --variant=minbase $suite from $mirror" - "$image" >/dev/null
log "done: $(docker image ls --format '{{.Repository}}:{{.Tag}} {{.Size}}' "$image")"
