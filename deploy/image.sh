#!/usr/bin/env bash
# Build the soundarc service image from the Bento: `bentoml build` -> its generated Dockerfile.
#
#   deploy/image.sh                      # IMAGE=localhost/soundarc:latest
#   BASE_IMAGE=... ENGINE=docker|buildah BENTOFILE=bentofile.gpu.yaml deploy/image.sh
#   BASE_NAME=localhost/my-base:tag deploy/image.sh   # buildah: the debootstrapped base to use or make
#
# ENGINE: docker where a Docker engine answers, else buildah (RUN steps in a chroot, no daemon).
# BASE_IMAGE replaces the Dockerfile's FROM (python:3.11-slim). With buildah and no BASE_IMAGE, a
# Debian bookworm base is made with debootstrap (deploy/base_image.sh), since this kind of machine
# cannot pull from a registry. RUN steps download packages: the host's CA bundle is mounted so
# that TLS works behind an intercepting proxy.
set -euo pipefail
cd "$(dirname "$0")/.."
IMAGE=${IMAGE:-localhost/soundarc:latest}
BENTOFILE=${BENTOFILE:-bentofile.yaml}
CA_BUNDLE=${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
export BENTOML_HOME=${BENTOML_HOME:-$PWD/build/bentoml} BENTOML_DO_NOT_TRACK=True
BENTOML=${BENTOML:-.venv/bin/bentoml}
if [[ -z "${ENGINE:-}" ]]; then
  if command -v docker >/dev/null && docker info >/dev/null 2>&1; then ENGINE=docker; else ENGINE=buildah; fi
fi

if [[ "$ENGINE" == buildah ]]; then
  missing=$(for tool in buildah podman debootstrap; do command -v "$tool" >/dev/null || echo -n "$tool "; done)
  if [[ -n "$missing" ]]; then
    echo "no Docker engine, and no ${missing% } for the buildah path: apt-get install buildah podman debootstrap (as root)" >&2
    exit 2
  fi
fi

started=$(date +%s)
tag=$("$BENTOML" build -f "$BENTOFILE" -o tag | sed -n 's/^__tag__://p' | tail -1)
bento=$("$BENTOML" get "$tag" -o path)
find "$(dirname "$bento")" -mindepth 1 -maxdepth 1 ! -name "$(basename "$bento")" ! -name latest -exec rm -rf {} +  # older Bentos
echo "bento $tag at $bento; building $IMAGE with $ENGINE"

from=()
if [[ "$ENGINE" == docker ]]; then
  [[ -n "${BASE_IMAGE:-}" ]] && sed -i "0,/^FROM .* AS base-container/s||FROM $BASE_IMAGE AS base-container|" "$bento/env/docker/Dockerfile"
  docker build -f "$bento/env/docker/Dockerfile" -t "$IMAGE" "$bento"
  docker image inspect "$IMAGE" --format 'size {{.Size}} bytes, {{len .RootFS.Layers}} layers'
else
  if [[ -z "${BASE_IMAGE:-}" ]]; then
    BASE_IMAGE=${BASE_NAME:-localhost/soundarc-base:bookworm}
    buildah inspect --type image "$BASE_IMAGE" >/dev/null 2>&1 || deploy/base_image.sh "$BASE_IMAGE"
  fi
  mounts=()
  [[ -f "$CA_BUNDLE" ]] && mounts=(-v "$CA_BUNDLE:/etc/ssl/certs/ca-certificates.crt:ro")
  buildah bud --isolation chroot --pull=never --layers --from "$BASE_IMAGE" "${mounts[@]}" \
    -f "$bento/env/docker/Dockerfile" -t "$IMAGE" "$bento"
  echo "layers $(buildah inspect --type image --format '{{len .OCIv1.RootFS.DiffIDs}}' "$IMAGE")," \
    "size $(buildah images --format '{{.Size}}' "$IMAGE")"
fi
echo "built $IMAGE from $tag in $(( $(date +%s) - started )) s"
