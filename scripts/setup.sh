#!/usr/bin/env bash
# Set up a fresh machine for the lab; safe to run again (each step skips what is done).
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else return 1; fi; }

# The real data set from Debian's package, where apt is available. Without it the lab
# downloads the same four files through torchvision on first use.
apt_packages=()
[ -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] || apt_packages+=(dataset-fashion-mnist)
# Headless Chromium drives the end-to-end browser test.
if [ "${WITH_BROWSER:-0}" = 1 ] && ! command -v chromium >/dev/null; then apt_packages+=(chromium); fi
# The shared queue's tests start a PostgreSQL server of their own (Debian's binaries, never a service).
if [ "${WITH_BROWSER:-0}" = 1 ] && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then apt_packages+=(postgresql); fi
# The class test serves the lab behind nginx (scripts/serve_class.sh: its own configuration, on 127.0.0.1).
nginx_new=0
if [ "${WITH_BROWSER:-0}" = 1 ] && ! command -v nginx >/dev/null && [ ! -x /usr/sbin/nginx ]; then
  apt_packages+=(nginx-light)
  nginx_new=1
fi
apt_install() {
  as_root apt-get update -qq || true
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${apt_packages[@]}" >/dev/null ||
    echo "setup: apt could not install ${apt_packages[*]}; continuing" >&2
  # Debian starts the nginx it installs as a service on port 80 where systemd runs: not the lab's.
  if [ "$nginx_new" = 1 ] && command -v systemctl >/dev/null && systemctl is-active --quiet nginx 2>/dev/null; then
    as_root systemctl disable --now nginx >/dev/null 2>&1 || true
  fi
}
apt_job=
if [ ${#apt_packages[@]} -gt 0 ] && command -v apt-get >/dev/null; then
  # Beside pip's install below (each mostly waits on downloads and the disk): a minute less on a
  # fresh machine than one after the other.
  echo "setup: installing ${apt_packages[*]} with apt" >&2
  apt_install &
  apt_job=$!
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
stamp=.venv/.requirements.sha256
wanted=$(cat requirements.txt requirements-dev.txt pyproject.toml | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$wanted" ]; then
  # torch's CUDA build and its libraries fill about 7 GB; say so before pip fails half-way.
  free_kb=$(df -Pk .venv | awk 'NR==2 {print $4}')
  if [ "${free_kb:-0}" -lt $((8 * 1024 * 1024)) ] && [ ! -d .venv/lib/python3*/site-packages/torch ]; then
    echo "setup: only $((free_kb / 1024)) MB free on $(df -P .venv | awk 'NR==2 {print $6}');" \
      "the requirements need about 8 GB (torch with its CUDA libraries). Free some space and run again." >&2
    exit 1
  fi
  echo "setup: installing Python requirements into .venv (torch is large: minutes the first time)" >&2
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -r requirements.txt -r requirements-dev.txt
  # The lab itself, editable: `python -m fmnist_core` and the bench scripts work from any folder.
  .venv/bin/python -m pip install -q --no-deps -e .
  echo "$wanted" > "$stamp"
fi
if [ -n "$apt_job" ]; then wait "$apt_job" || true; fi
