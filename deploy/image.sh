#!/usr/bin/env bash
# Build the soundarc service image from deploy/Dockerfile (CPU, or GPU with VARIANT=gpu).
#
#   deploy/image.sh                      # IMAGE=localhost/soundarc:latest, CPU
#   VARIANT=gpu IMAGE=localhost/soundarc:gpu deploy/image.sh
#   BASE_IMAGE=python:3.11-slim ENGINE=docker|buildah deploy/image.sh
#   BASE_NAME=localhost/my-base:tag deploy/image.sh   # buildah: the debootstrapped base to use or make
#
# ENGINE: docker where a Docker engine answers, else buildah (RUN steps in a chroot, no daemon).
# BASE_IMAGE is the Dockerfile's BASE (python:3.11-slim). With buildah and no BASE_IMAGE, a Debian
# bookworm base with Python 3.11 is made with debootstrap (deploy/base_image.sh), since this kind of
# machine cannot pull from a registry. RUN steps download packages: the host's CA bundle is mounted
# so that TLS works behind an intercepting proxy.
set -euo pipefail
cd "$(dirname "$0")/.."
IMAGE=${IMAGE:-localhost/soundarc:latest}
VARIANT=${VARIANT:-cpu}
CA_BUNDLE=${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
if [[ -z "${ENGINE:-}" ]]; then
  if command -v docker >/dev/null && docker info >/dev/null 2>&1; then ENGINE=docker; else ENGINE=buildah; fi
fi
args=()
case "$VARIANT" in
  cpu) ;;
  gpu) args+=(--build-arg "ONNXRUNTIME=onnxruntime-gpu[cuda,cudnn]>=1.21" --build-arg DEVICE=cuda
              --build-arg REQUIRE_GPU=true) ;;
  *) echo "VARIANT is cpu or gpu, not $VARIANT" >&2; exit 2 ;;
esac

started=$(date +%s)
if [[ "$ENGINE" == docker ]]; then
  [[ -n "${BASE_IMAGE:-}" ]] && args+=(--build-arg "BASE=$BASE_IMAGE")
  docker build -f deploy/Dockerfile "${args[@]}" -t "$IMAGE" .
  docker image inspect "$IMAGE" --format 'size {{.Size}} bytes, {{len .RootFS.Layers}} layers'
else
  missing=$(for tool in buildah podman debootstrap; do command -v "$tool" >/dev/null || echo -n "$tool "; done)
  if [[ -n "$missing" ]]; then
    echo "no Docker engine, and no ${missing% } for the buildah path: apt-get install buildah podman debootstrap (as root)" >&2
    exit 2
  fi
  if [[ -z "${BASE_IMAGE:-}" ]]; then
    BASE_IMAGE=${BASE_NAME:-localhost/soundarc-base:bookworm}
    buildah inspect --type image "$BASE_IMAGE" >/dev/null 2>&1 || deploy/base_image.sh "$BASE_IMAGE"
  fi
  mounts=()
  [[ -f "$CA_BUNDLE" ]] && mounts=(-v "$CA_BUNDLE:/etc/ssl/certs/ca-certificates.crt:ro")
  buildah bud --isolation chroot --pull=never --layers --format docker --build-arg "BASE=$BASE_IMAGE" "${args[@]}" "${mounts[@]}" \
    -f deploy/Dockerfile -t "$IMAGE" .
  echo "size $(buildah images --format '{{.Size}}' "$IMAGE"), user $(buildah inspect --type image --format '{{.OCIv1.Config.User}}' "$IMAGE")"
  podman history --format '{{.Size}}\t{{.CreatedBy}}' "$IMAGE" | cut -c1-140
fi
echo "built $IMAGE ($VARIANT) in $(( $(date +%s) - started )) s"
