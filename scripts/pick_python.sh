#!/usr/bin/env bash
# Print the absolute path of the Python that `make venv` builds its venv from, or say in one line (on stderr,
# exit 1) why there is none. $PYTHON_BOOT wins when set; otherwise the newest supported pythonX.Y that runs.
# The supported versions come from requires-python in pyproject.toml, their one home.
# pyenv: a shim of a version that is installed but not active fails ("pyenv: python3.13: command not found");
# such a name is then looked up among pyenv's installed versions, so no PYENV_VERSION juggling is needed.
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bounds=$(sed -n 's/^requires-python = ">=3\.\([0-9][0-9]*\),<3\.\([0-9][0-9]*\)"$/\1 \2/p' "$ROOT/pyproject.toml")
if [[ -z $bounds ]]; then
    echo "pick_python.sh: cannot read requires-python = \">=3.X,<3.Y\" in $ROOT/pyproject.toml" >&2
    exit 1
fi
read -r lowest end <<<"$bounds"
SUPPORTED=()  # newest first
for ((minor = end - 1; minor >= lowest; minor--)); do SUPPORTED+=("3.$minor"); done
HUMAN="Python 3.$lowest"  # "Python 3.11, 3.12 or 3.13"
for ((minor = lowest + 1; minor < end - 1; minor++)); do HUMAN+=", 3.$minor"; done
if ((end - 1 > lowest)); then HUMAN+=" or 3.$((end - 1))"; fi
FIX="set PYTHON_BOOT=/path/to/python${SUPPORTED[0]}"

# "X.Y" of an interpreter, or nothing (status 1) when it does not run.
version_of() { "$1" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null; }

is_supported() {
    local v
    for v in "${SUPPORTED[@]}"; do [[ $1 == "$v" ]] && return 0; done
    return 1
}

# Where pyenv keeps its Pythons (also when only its shims, not pyenv itself, are on PATH).
pyenv_root() {
    if command -v pyenv >/dev/null 2>&1; then pyenv root; else echo "${PYENV_ROOT:-$HOME/.pyenv}"; fi
}

# The command itself, then (for a pythonX.Y name) pyenv's installs of X.Y, newest patch release first.
candidates() {
    echo "$1"
    if [[ $1 =~ ^python(3\.[0-9]+)$ ]]; then
        compgen -G "$(pyenv_root)/versions/${BASH_REMATCH[1]}.*/bin/$1" | sort -rV
    fi
}

# Print "VERSION PATH" for the first candidate of $1 that runs; status 1 when none does.
first_running() {
    local c v
    while IFS= read -r c; do
        if v=$(version_of "$c") && [[ -n $v ]]; then
            echo "$v $("$c" -c 'import sys; print(sys.executable)')"
            return 0
        fi
    done < <(candidates "$1")
    return 1
}

if [[ -n ${PYTHON_BOOT:-} ]]; then
    if ! found=$(first_running "$PYTHON_BOOT"); then
        echo "PYTHON_BOOT=$PYTHON_BOOT does not run; nerveseg needs $HUMAN: $FIX" >&2
        exit 1
    fi
    read -r version path <<<"$found"
    if ! is_supported "$version"; then
        echo "PYTHON_BOOT=$PYTHON_BOOT is Python $version; nerveseg needs $HUMAN: $FIX" >&2
        exit 1
    fi
    echo "$path"
    exit 0
fi

for v in "${SUPPORTED[@]}"; do
    if found=$(first_running "python$v"); then
        read -r version path <<<"$found"
        if is_supported "$version"; then
            echo "$path"
            exit 0
        fi
    fi
done
echo "no $HUMAN found (as python${SUPPORTED[0]} ... python${SUPPORTED[-1]}): install one or $FIX" >&2
exit 1
