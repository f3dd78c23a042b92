# Shared by scripts/serve and scripts/test: idempotent set-up steps.
# shellcheck shell=bash

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

say() { printf '==> %s\n' "$*" >&2; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# apt_install PKG...: installs the Debian packages that are not installed yet.
apt_install() {
    local missing=()
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    say "installing Debian packages: ${missing[*]}"
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# python_venv DIR REQUIREMENTS: a virtualenv in DIR with exactly REQUIREMENTS installed;
# rebuilt only when the requirements file changes.
python_venv() {
    local dir=$1 requirements=$2 stamp
    if ! python3 -m venv --help >/dev/null 2>&1; then
        apt_install python3 python3-venv
    fi
    stamp=$(sha256sum "$requirements" | cut -d' ' -f1)
    if [ -x "$dir/bin/python" ] && [ "$(cat "$dir/.requirements.sha256" 2>/dev/null)" = "$stamp" ]; then
        return 0
    fi
    say "creating $dir from $requirements"
    rm -rf "$dir"
    python3 -m venv "$dir"
    "$dir/bin/pip" install --quiet --disable-pip-version-check -r "$requirements"
    echo "$stamp" >"$dir/.requirements.sha256"
}

# runner_venv: the Python runner's virtualenv (.venv), as Runner.Python expects it.
runner_venv() {
    python_venv "$ROOT/.venv" "$ROOT/docker/runner/requirements.txt"
}
