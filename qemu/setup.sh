#!/bin/sh
# Install what the lab and the tests need on a Debian 12 machine, only what is missing.
# Run as root (CI) or with sudo available. Python test dependencies go into .venv.
# The last line of PACKAGES is for building the 6.1-fp kernel from source (qemu/fpkernel.py).
# arm64 kernels need more (qemu/setup-arm64.sh, run by the Makefile only when one is named).
set -eu
cd "$(dirname "$0")/.."

PACKAGES="qemu-system-x86 busybox-static cpio gdb gcc-12 make xz-utils libelf1 libssl3 zlib1g \
python3 python3-venv python3-pygments \
libc6-dev flex bison bc libelf-dev"
missing=""
for p in $PACKAGES; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
	SUDO=""
	[ "$(id -u)" = 0 ] || SUDO="sudo"
	echo "setup: installing$missing"
	$SUDO apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ] || [ requirements.txt -nt .venv/.installed ]; then
	"$PY" -m venv .venv
	.venv/bin/python -m pip install -q --disable-pip-version-check -r requirements.txt
	touch .venv/.installed
fi
# gdb 18.1 lives in a venv of its own so its `gdb` never shadows Debian's.
if [ ! -x .venv-gdb18/bin/gdb ] || [ requirements-gdb18.txt -nt .venv-gdb18/.installed ]; then
	"$PY" -m venv .venv-gdb18
	.venv-gdb18/bin/python -m pip install -q --disable-pip-version-check -r requirements-gdb18.txt
	touch .venv-gdb18/.installed
fi
