#!/usr/bin/env bash
# Install the eddyline edge agent on Raspberry Pi OS (Bookworm) or NVIDIA Jetson (JetPack 6, Ubuntu 22.04).
#
#   sudo ./install.sh --package ./eddyline-0.1.0-py3-none-any.whl [--onnx] [--config my-edge.toml] [--device-id ID]
#
# Creates a system user 'eddyline', a virtual environment in /opt/eddyline-edge/venv with only the light
# dependencies (eddyline[edge]: fastavro, confluent-kafka, pydantic, pydantic-settings, prometheus-client;
# --onnx adds onnxruntime), the config /etc/eddyline-edge/edge.toml (kept if present), the buffer directory
# /var/lib/eddyline-edge, and the systemd unit eddyline-edge.service, enabled and started. Rerun it to upgrade:
# it keeps the config and env, and restarts the agent once the config passes check-config.
# A new edge.toml gets device_id ID, else the host name; an image's default host name (raspberrypi: every device
# flashed from the image has it) gets a hash of /etc/machine-id appended: raspberrypi-3f9c0a1b2d4e.
set -euo pipefail

PREFIX=/opt/eddyline-edge
ETC=/etc/eddyline-edge
PACKAGE="eddyline"
EXTRAS="edge"
CONFIG=""
DEVICE_ID=""
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

die() { echo "install.sh: $*" >&2; exit 1; }

while [[ $# -gt 0 ]]; do
  case "$1" in
    --package) PACKAGE="$2"; shift 2 ;;
    --onnx) EXTRAS="edge,edge-onnx"; shift ;;
    --config) CONFIG="$2"; shift 2 ;;
    --prefix) PREFIX="$2"; shift 2 ;;
    --device-id) DEVICE_ID="$2"; shift 2 ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
done

[[ -z "$DEVICE_ID" || "$DEVICE_ID" =~ ^[A-Za-z0-9._-]+$ ]] || die "--device-id takes letters, digits, '.', '_' and '-'"
[[ -z "$DEVICE_ID" || -z "$CONFIG" ]] || die "--device-id names a new edge.toml's device; set device_id in $CONFIG"
[[ $EUID -eq 0 ]] || die "run as root (sudo $0 ...): it creates a user, /opt, /etc and a systemd unit"
command -v systemctl >/dev/null || die "systemd is required; run 'eddyline-edge run --config FILE' by hand instead"

default_device_id() {
  local host machine
  host="$(hostname)"
  case "$host" in
    "" | localhost | localhost.localdomain | raspberrypi | ubuntu | debian | tegra-ubuntu | jetson) ;;
    *) echo "$host"; return ;;
  esac
  machine="$(cat /etc/machine-id 2>/dev/null || true)"
  [[ -n "$machine" ]] || die "'$host' is an image's default host name and /etc/machine-id is empty: pass --device-id"
  # machine-id(5): never publish the id itself, only a hash keyed to the application
  echo "${host:-edge}-$(printf 'eddyline-edge:%s' "$machine" | sha256sum | cut -c1-12)"
}

# The disk buffer belongs to the id it was made for: an upgrade keeps the one the installed edge.toml has.
if [[ -z "$CONFIG" && -f "$ETC/edge.toml" ]]; then
  installed_id="$(sed -n 's/^device_id *= *"\([^"]*\)".*/\1/p' "$ETC/edge.toml")"
  [[ -z "$DEVICE_ID" || "$DEVICE_ID" == "$installed_id" ]] || die "this device already runs as" \
    "'${installed_id:-its host name}' ($ETC/edge.toml): drop --device-id, or change device_id and buffer_path there"
elif [[ -z "$CONFIG" && -z "$DEVICE_ID" ]]; then
  DEVICE_ID="$(default_device_id)"
fi

model="$(tr -d '\0' 2>/dev/null </proc/device-tree/model || true)"
if [[ -f /etc/nv_tegra_release || "$model" == *Jetson* ]]; then
  board=jetson
elif [[ "$model" == *"Raspberry Pi"* ]]; then
  board=pi
else
  board=other
fi
echo "install.sh: board: ${model:-unknown} ($board)"

# eddyline needs Python 3.11: Raspberry Pi OS Bookworm ships it; JetPack 6 (Ubuntu 22.04) has it in universe.
PY=""
for candidate in python3.11 python3; do
  if command -v "$candidate" >/dev/null && "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
    PY="$(command -v "$candidate")"; break
  fi
done
if [[ -z "$PY" ]]; then
  echo "install.sh: installing python3.11 from the distribution"
  apt-get update -q && apt-get install -y -q python3.11 python3.11-venv || die "no Python 3.11: install it, then rerun"
  PY="$(command -v python3.11)"
fi
"$PY" -m venv --help >/dev/null 2>&1 || apt-get install -y -q python3.11-venv python3-venv || true

id eddyline >/dev/null 2>&1 || useradd --system --home-dir /var/lib/eddyline-edge --shell /usr/sbin/nologin eddyline
for group in i2c dialout gpio spi; do  # I2C and serial sensors, where the board has them
  getent group "$group" >/dev/null && usermod -aG "$group" eddyline
done

mkdir -p "$PREFIX" "$ETC"
[[ -d "$PREFIX/venv" ]] || "$PY" -m venv "$PREFIX/venv"
"$PREFIX/venv/bin/pip" install --quiet --upgrade pip
spec="$PACKAGE"
[[ -e "$PACKAGE" ]] && spec="$(realpath "$PACKAGE")"
"$PREFIX/venv/bin/pip" install --quiet --upgrade "${spec}[${EXTRAS}]"  # a rerun upgrades
if [[ $board == jetson && $EXTRAS == *onnx* ]]; then
  echo "install.sh: for CUDA/TensorRT on the Jetson, install NVIDIA's onnxruntime-gpu wheel for your JetPack"
  echo "            into $PREFIX/venv (pip uninstall onnxruntime first); the CPU provider works meanwhile."
fi
if "$PREFIX/venv/bin/python" -c 'import torch' 2>/dev/null; then
  die "torch ended up in $PREFIX/venv: something pulled a heavy dependency; report it"
fi

if [[ -n "$CONFIG" ]]; then
  install -m 640 -g eddyline "$CONFIG" "$ETC/edge.toml"
elif [[ ! -f "$ETC/edge.toml" ]]; then
  install -m 640 -g eddyline "$HERE/edge.example.toml" "$ETC/edge.toml"
  sed -i "s/^device_id = .*/device_id = \"$DEVICE_ID\"/" "$ETC/edge.toml"
  echo "install.sh: this device publishes as $DEVICE_ID"
  echo "install.sh: wrote $ETC/edge.toml from the example: set [kafka] before starting"
fi
[[ -f "$ETC/env" ]] || install -m 600 /dev/null "$ETC/env"
[[ -f "$HERE/../README.md" ]] && install -m 644 "$HERE/../README.md" "$PREFIX/README.md"

install -m 644 "$HERE/eddyline-edge.service" /etc/systemd/system/eddyline-edge.service
if [[ "$PREFIX" != /opt/eddyline-edge ]]; then
  sed -i "s#/opt/eddyline-edge#$PREFIX#g" /etc/systemd/system/eddyline-edge.service
fi
systemctl daemon-reload

# as the agent's own user: a device or file that only root can open must fail here, not after "running"
if (cd / && runuser -u eddyline -- "$PREFIX/venv/bin/eddyline-edge" check-config --config "$ETC/edge.toml"); then
  systemctl enable eddyline-edge.service
  systemctl restart eddyline-edge.service  # on a rerun, the new version and unit; enable --now keeps the old running
  echo "install.sh: running. Follow it with: journalctl -u eddyline-edge -f"
else
  systemctl enable eddyline-edge.service
  echo "install.sh: installed but not (re)started: fix $ETC/edge.toml, then: systemctl restart eddyline-edge" >&2
fi
