#!/bin/sh
# Container entry point: `mitoscope challenge <track>` on /input → /output (grand-challenge's mounts).
# Settings come from the image (ENV, set by the Dockerfile's build arguments) and may be overridden with
# `docker run -e ...`; extra arguments are passed on (e.g. `--tta`, `--threshold 0.6`, `--device cpu`).
set -eu
track="${MITOSCOPE_TRACK:-track1}"
set -- challenge "$track" --input "${MITOSCOPE_INPUT:-/input}" --output "${MITOSCOPE_OUTPUT:-/output}" "$@"
if [ -n "${MITOSCOPE_MODEL:-}" ]; then
    set -- "$@" --model "$MITOSCOPE_MODEL"
fi
if [ -n "${MITOSCOPE_CLASSIFIER:-}" ] && [ "$track" = "track1" ]; then
    set -- "$@" --classifier "$MITOSCOPE_CLASSIFIER"
fi
exec "${MITOSCOPE:-mitoscope}" "$@"
