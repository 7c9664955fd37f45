#!/usr/bin/env bash
# Build the image and run it as grand-challenge does (no network, read-only /input, fresh /output), on a folder
# laid out like the reference containers' test/input (inputs.json + images/<interface>/<image>.tiff).
#   container/do_test_run.sh track2 path/to/test/input [extra mitoscope arguments, e.g. --device cpu]
# Optional: GROUND_TRUTH=gt.json scores the output with the evaluators' arithmetic (mitoscope challenge score).
set -euo pipefail
HERE=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" &>/dev/null && pwd)
TRACK=${1:?usage: do_test_run.sh track1|track2 INPUT_DIR [args]}
INPUT_DIR=$(cd -- "${2:?usage: do_test_run.sh track1|track2 INPUT_DIR [args]}" && pwd)
shift 2
TAG=${DOCKER_IMAGE_TAG:-mitoscope-midog25-${TRACK}}
OUTPUT_DIR="${HERE}/test-output/${TRACK}/$(basename "$INPUT_DIR")"

echo "=+= (Re)build ${TAG}"
docker build --platform=linux/amd64 -f "${HERE}/Dockerfile" --build-arg TRACK="${TRACK}" \
    ${MODEL:+--build-arg MODEL="$MODEL"} ${CLASSIFIER:+--build-arg CLASSIFIER="$CLASSIFIER"} \
    -t "$TAG" "${HERE}/.."

rm -rf "$OUTPUT_DIR" && mkdir -p -m o+rwX "$OUTPUT_DIR"
chmod -R -f o+rX "$INPUT_DIR" || true
GPU=()
if docker info --format '{{.Runtimes.nvidia}}' 2>/dev/null | grep -q nvidia; then GPU=(--gpus all); fi
VOLUME="${TAG}-tmp"
docker volume create "$VOLUME" >/dev/null
trap 'docker volume rm "$VOLUME" >/dev/null' EXIT

echo "=+= Forward pass on ${INPUT_DIR}"
docker run --rm --platform=linux/amd64 --network none --memory=16g --shm-size=8g "${GPU[@]}" \
    --volume "${INPUT_DIR}":/input:ro --volume "${OUTPUT_DIR}":/output --volume "${VOLUME}":/tmp \
    "$TAG" "$@"
echo "=+= Wrote $(ls "$OUTPUT_DIR") to ${OUTPUT_DIR}"

if [ -n "${GROUND_TRUTH:-}" ]; then
    echo "=+= Score (mitoscope challenge score, on this machine)"
    mitoscope challenge score "$(dirname "$OUTPUT_DIR")" "$GROUND_TRUTH" --partial
fi
