#!/usr/bin/env bash
# Save the built image as the .tar.gz that grand-challenge takes (Algorithm → Containers → upload).
#   container/do_save.sh track1   (after do_test_run.sh built mitoscope-midog25-track1)
set -euo pipefail
HERE=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" &>/dev/null && pwd)
TRACK=${1:?usage: do_save.sh track1|track2}
TAG=${DOCKER_IMAGE_TAG:-mitoscope-midog25-${TRACK}}
OUT="${HERE}/${TAG}_$(date +%Y-%m-%d_%H-%M-%S).tar.gz"
docker save "$TAG" | gzip -c > "$OUT"
echo "Saved ${OUT}"
