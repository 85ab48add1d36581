# Sourced by run.sh and test.sh: a .venv with the project installed, and ffmpeg's libraries.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv with $($PYTHON --version)"
  "$PYTHON" -m venv .venv
fi
# reinstall only when setup.cfg changed since the last install
stamp=.venv/.installed-setup.cfg
if ! cmp -s setup.cfg "$stamp" 2>/dev/null; then
  echo "[setup] installing extract and its dependencies into .venv (torch is large: first time takes minutes)"
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -e ".[models,test]"
  cp setup.cfg "$stamp"
fi

# torchcodec needs ffmpeg's shared libraries; the tests also use the ffmpeg command
if ! { ldconfig -p 2>/dev/null | grep -q 'libavcodec\.so'; } || ! command -v ffmpeg >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "[setup] installing Debian's ffmpeg"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ffmpeg >/dev/null
  else
    echo "[setup] ffmpeg is missing: install it (Debian/Ubuntu: sudo apt-get install ffmpeg; conda: conda install -c conda-forge 'ffmpeg<8') and run again" >&2
    exit 1
  fi
fi
