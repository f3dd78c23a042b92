#!/usr/bin/env bash
# Builds the runner image (the design's build-docker.sh).
#
#   docker/build.sh [--tag diagnosis-service:latest] [--base-image python:3.12-slim]
#                   [--extra-ca-dir DIR] [--network NETWORK] [--label KEY=VALUE]
#
# --base-image    any Debian-like image with python3 (and its venv module); offline machines
#                 can import one made with debootstrap (see scripts/docker-base-image).
# --extra-ca-dir  *.crt files to trust inside the build and the image (a TLS-intercepting
#                 proxy's CA), e.g. /usr/local/share/ca-certificates.
# --network       the build's network (`host` where the bridge cannot reach out).
# --label         a label for the image (repeatable).
set -euo pipefail

tag=diagnosis-service:latest
base=python:3.12-slim
extra_ca=""
network=""
labels=()
while [ $# -gt 0 ]; do
    case "$1" in
        --tag) tag=$2; shift 2 ;;
        --base-image) base=$2; shift 2 ;;
        --extra-ca-dir) extra_ca=$2; shift 2 ;;
        --network) network=$2; shift 2 ;;
        --label) labels+=(--label "$2"); shift 2 ;;
        -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
        *) echo "build.sh: unknown option $1" >&2; exit 64 ;;
    esac
done

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
context=$(mktemp -d)
trap 'rm -rf "$context"' EXIT
cp "$here/Dockerfile" "$context/"
mkdir -p "$context/runner" "$context/extra-ca"
cp "$here/runner/requirements.txt" "$here/runner/"*.py "$context/runner/"
if [ -n "$extra_ca" ]; then
    find "$extra_ca" -maxdepth 1 -name '*.crt' -exec cp {} "$context/extra-ca/" \;
fi

args=(--tag "$tag" --build-arg "BASE_IMAGE=$base")
[ -n "$network" ] && args+=(--network "$network")
args+=("${labels[@]}")
echo "building $tag from $base" >&2
docker build "${args[@]}" "$context"
