#!/usr/bin/env bash
# The image, for real: no torch and a non-root user in it; start the service inside it (its own
# entrypoint) on 127.0.0.1, wait for /readyz, classify a committed real clip and check its label,
# check that bad input still gets a 4xx, stop everything.
#
#   deploy/image_test.sh                 # IMAGE=localhost/soundarc:latest, built first if missing
#
# `buildah run` (chroot isolation) shares the host's network, so the server listens on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."
IMAGE=${IMAGE:-localhost/soundarc:latest}
CLIP=tests/fixtures/1-27724-A-1.ogg
EXPECTED=rooster
PORT=${PORT:-$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}
URL=http://127.0.0.1:$PORT

buildah inspect --type image "$IMAGE" >/dev/null 2>&1 || deploy/image.sh
ctr=$(buildah from --pull-never "$IMAGE")
if buildah run --isolation chroot "$ctr" -- python -c 'import importlib.util as u, sys; sys.exit(u.find_spec("torch") is not None)'; then
  echo "ok: no torch in the image"
else
  echo "FAIL: torch is installed in $IMAGE"; buildah rm "$ctr" >/dev/null; exit 1
fi
user=$(buildah run --isolation chroot "$ctr" -- id -u)
[[ "$user" != 0 ]] || { echo "FAIL: $IMAGE runs as root"; buildah rm "$ctr" >/dev/null; exit 1; }
echo "ok: runs as uid $user"
log=$(mktemp)
token=soundarc-image-test-$$-$RANDOM  # in the environment of every process the server starts
ours() { grep -lsz "^SOUNDARC_IMAGE_TEST=$token\$" /proc/[0-9]*/environ | cut -d/ -f3 || true; }
stop() {
  set +e  # clean up whatever is left, come what may
  local pids
  pids=$(ours)
  [[ -n "$pids" ]] && kill -TERM $pids 2>/dev/null
  for _ in $(seq 40); do [[ -z "$(ours)" ]] && break; sleep 0.25; done
  pids=$(ours)
  [[ -n "$pids" ]] && kill -KILL $pids 2>/dev/null
  buildah umount "$ctr" >/dev/null 2>&1
  buildah rm "$ctr" >/dev/null
  echo "stopped: $(ours | wc -l) processes left"
}
trap stop EXIT

mnt=$(buildah mount "$ctr")
marker=$(mktemp)
started=$(date +%s.%N)
buildah run --isolation chroot --env "SOUNDARC_IMAGE_TEST=$token" "$ctr" -- \
  bentoml serve service.app:SoundArc --host 127.0.0.1 --port "$PORT" >"$log" 2>&1 &  # the entrypoint, on loopback
server=$!
until curl -sf -o /dev/null "$URL/readyz"; do
  if ! kill -0 "$server" 2>/dev/null || (( $(date +%s) - ${started%.*} > 300 )); then
    echo "FAIL: the server in $IMAGE did not become ready"; tail -40 "$log"; exit 1
  fi
  sleep 0.5
done
echo "ready in $(python3 -c "import time; print(round(time.time() - $started, 1))") s (cold start): $(curl -s "$URL/readyz")"

label=$(curl -s -F "audio=@$CLIP" "$URL/classify" | python3 -c 'import json, sys; print(json.load(sys.stdin)["label"])')
[[ "$label" == "$EXPECTED" ]] || { echo "FAIL: $CLIP classified as '$label', expected '$EXPECTED'"; exit 1; }
echo "ok: $CLIP -> $label"

check() {  # expected status, description, curl arguments...
  local want=$1 what=$2; shift 2
  local got
  got=$(curl -s -o /dev/null -w '%{http_code}' "$@")
  [[ "$got" == "$want" ]] || { echo "FAIL: $what answered $got, expected $want"; exit 1; }
  echo "ok: $what -> $got"
}
check 400 "a text file as audio" -F "audio=@README.md" "$URL/classify"
check 415 "a JSON body" -H 'Content-Type: application/json' -d '{}' "$URL/classify"
check 422 "top_k=0" -F "audio=@$CLIP" -F top_k=0 "$URL/classify"
check 201 "an enrolment (saved to /data/enrolled.json, else 503)" -F label=image-test -F "audio=@$CLIP" "$URL/classes"
# A read-only root file system must do: nothing written outside /tmp and /data while serving.
written=$(cd "$mnt" && find . -xdev -newer "$marker" -type f ! -path './tmp/*' ! -path './data/*' \
          ! -path './etc/hosts' ! -path './etc/resolv.conf' ! -path './etc/hostname' ! -path './run/.containerenv' | head -5)
[[ -z "$written" ]] || { echo "FAIL: the server wrote outside /tmp and /data: $written"; exit 1; }
echo "ok: writes only to /tmp and /data (a read-only root file system will do)"
echo "image test passed: $IMAGE"
