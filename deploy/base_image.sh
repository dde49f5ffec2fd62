#!/usr/bin/env bash
# A Debian bookworm base image with Python 3.11, made with debootstrap (no registry needed) and
# imported as a local image: the stand-in for python:3.11-slim where images cannot be pulled.
#
#   deploy/base_image.sh [NAME]          # default localhost/soundarc-base:bookworm
#   ROOTFS=DIR deploy/base_image.sh      # where debootstrap writes (default build/image/rootfs, reused)
set -euo pipefail
cd "$(dirname "$0")/.."
NAME=${1:-localhost/soundarc-base:bookworm}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
ROOTFS=$(realpath -m "${ROOTFS:-build/image/rootfs}")  # debootstrap wants an absolute target
mkdir -p "$(dirname "$ROOTFS")"
if [[ ! -x "$ROOTFS/usr/bin/python3" ]]; then
  rm -rf "$ROOTFS"
  debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,python-is-python3,ca-certificates \
    bookworm "$ROOTFS" "$MIRROR"
fi
# pip may install into the system Python, as on python:3.11-slim (the Dockerfile makes its own venv).
rm -f "$ROOTFS"/usr/lib/python3*/EXTERNALLY-MANAGED
rm -rf "$ROOTFS"/var/cache/apt/archives/*.deb "$ROOTFS"/var/lib/apt/lists/*
tar -C "$ROOTFS" -c . | podman import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt' \
  --change 'ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt' \
  --change 'CMD ["/bin/bash"]' - "$NAME"
echo "base image $NAME"
