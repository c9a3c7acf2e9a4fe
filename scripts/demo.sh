#!/usr/bin/env bash
# The main job: baseline fit against fit with LearnDrop, side by side.
source "$(dirname "$0")/env.sh"
python -m examples.compare "$@"
