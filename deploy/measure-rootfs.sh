#!/usr/bin/env bash
# Measures the opusd image without a Docker engine: assembles in a folder the root filesystem that
# a Dockerfile's final stage makes (Debian bookworm, slimmed as the `-slim` images are; the final
# stage's RUN line itself, run in a chroot; opusd at /usr/local/bin), checks that git still clones,
# fetches and checks out there, and prints the sizes. Needs root, debootstrap and a Debian mirror
# (the one apt uses). Usage:
#
#   MIRROR=<Debian mirror URL> bash deploy/measure-rootfs.sh deploy/Dockerfile <opusd> <folder>
#
# <folder> is made anew; the debootstrapped base is kept beside it (<folder>.base.tar) for the next
# run. What it prints:
#   - tar bytes: the folder as one uncompressed layer, which is what `docker images` adds up;
#   - tar | gzip -6 bytes: about what a registry pull transfers.
# The official debian:bookworm-slim is made by debuerreotype, not by debootstrap's minbase: the two
# differ by a few MB.
set -euo pipefail
usage="usage: MIRROR=<url> measure-rootfs.sh <Dockerfile> <opusd binary> <folder>"
dockerfile=${1:?$usage}
opusd=${2:?$usage}
root=${3:?$usage}
: "${MIRROR:?$usage}"
case $(realpath -m "$root") in /) echo "refusing to make / anew" >&2; exit 1 ;; esac

# The final stage's first RUN line, continuation lines joined (Docker runs it with `sh -c`).
run_line=$(awk '/^FROM debian:/ { final = 1 }
    final && /^RUN / { on = 1; sub(/^RUN /, "") }
    on { print; if (!/\\$/) exit }' "$dockerfile")
[ -n "$run_line" ] || { echo "no RUN line in the final stage of $dockerfile" >&2; exit 1; }

base="$root.base.tar"
if [ ! -f "$base" ]; then
    rm -rf "$root.base"
    debootstrap --variant=minbase bookworm "$root.base" "$MIRROR" >"$root.debootstrap.log" 2>&1
    # The -slim images' dpkg filter: no documentation, man pages or translations.
    cat >"$root.base/etc/dpkg/dpkg.cfg.d/docker-slim" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/locale/*
EOF
    find "$root.base/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
    rm -rf "$root.base"/usr/share/{man,groff,info,lintian,linda,locale}/*
    rm -rf "$root.base"/var/cache/apt/archives/*.deb "$root.base"/var/lib/apt/lists/*
    tar -C "$root.base" --numeric-owner -cf "$base" .
    rm -rf "$root.base"
fi
size() { tar -C "$root" --numeric-owner -cf - . | wc -c; }

rm -rf "$root"
mkdir -p "$root"
tar -C "$root" --numeric-owner -xf "$base"
# The -slim images' apt settings: no package caches, no translations, compressed indexes.
cat >"$root/etc/apt/apt.conf.d/docker-clean" <<'EOF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
EOF
echo 'Apt::AutoRemove::SuggestsImportant "false";' >"$root/etc/apt/apt.conf.d/docker-autoremove-suggests"
echo 'Acquire::GzipIndexes "true";' >"$root/etc/apt/apt.conf.d/docker-gzip-indexes"
echo 'Acquire::Languages "none";' >"$root/etc/apt/apt.conf.d/docker-no-languages"
echo "base (bookworm minbase, slimmed): $(size) bytes (tar)"
cp /etc/resolv.conf "$root/etc/resolv.conf"
chroot "$root" sh -c "$run_line" >"$root.run.log" 2>&1
echo "base + the RUN line:              $(size) bytes (tar)"
install -D -m 0755 "$opusd" "$root/usr/local/bin/opusd"
echo "opusd:                            $(stat -c %s "$opusd") bytes"
echo "image:                            $(size) bytes (tar)"
echo "image, gzip -6:                   $(tar -C "$root" --numeric-owner -cf - . | gzip -6 | wc -c) bytes"

# What opusd runs of git, in the image: a mirror clone, a fetch, a shared clone and a checkout
# (file://), and the https and ssh transports present (they fail to connect, not to start).
chroot --userspec=10001:10001 "$root" sh -ec '
    export HOME=/var/lib/opus GIT_CONFIG_NOSYSTEM=1
    cd /tmp && rm -rf src mirror work && git init -q src
    git -C src -c user.name=t -c user.email=t@example.invalid commit -q --allow-empty -m one
    git clone --quiet --mirror -- file:///tmp/src mirror
    git --git-dir mirror fetch --quiet --prune --force origin
    git clone --quiet --shared --no-checkout mirror work
    git -C work checkout --quiet --detach "$(git --git-dir mirror rev-parse HEAD)"
    git -C work ls-tree --name-only HEAD -- >/dev/null
    for url in https://127.0.0.1:9/x ssh://127.0.0.1:9/x; do
        if out=$(git ls-remote "$url" 2>&1); then echo "git ls-remote $url worked?" >&2; exit 1; fi
        case $out in *"unable to find remote helper"*|*"not found"*|*"No such file"*) echo "$out" >&2; exit 1;; esac
    done
    opusd --version >/dev/null
    rm -rf src mirror work'
echo "git clone/fetch/checkout, https and ssh transports, opusd --version: ok in the image"
