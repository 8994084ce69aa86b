#!/bin/sh
# Builds the zaqar-grpc wheel from a source tree and installs it, with its dependencies, into a
# new virtual environment:
#
#   install.sh SOURCE_DIR VENV_DIR
#
# The image's build stage runs it (deploy/docker/Dockerfile), and so does
# tests/unit/test_image.py, so the test installs exactly what the image does. PYTHON names the
# interpreter the venv is made from (default python3); pip's other settings come from PIP_*
# variables (the Dockerfile sets PIP_NO_CACHE_DIR=1, the test keeps pip's cache).
set -eu
src=$1
venv=$2
"${PYTHON:-python3}" -m venv "$venv"
wheels=$(mktemp -d)
trap 'rm -rf "$wheels"' EXIT
"$venv/bin/python" -m pip wheel --no-deps --wheel-dir "$wheels" "$src"
"$venv/bin/python" -m pip install "$wheels"/zaqar_grpc-*.whl
