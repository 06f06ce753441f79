#!/bin/sh
# What the arm64 lab kernels (6.1-arm64, 6.12-arm64) need beyond qemu/setup.sh, only what is
# missing: the arm64 architecture in dpkg (so apt-cache and apt-get download see Debian's arm64
# kernels and busybox-static:arm64; nothing arm64 is installed), QEMU for aarch64, a gdb that
# reads aarch64 (Debian's `gdb` is x86-only) and the cross compiler for the lab modules.
# The Makefile runs it only when an arm64 kernel is asked for: x86-only runs never pay for it.
set -eu
PACKAGES="qemu-system-arm gdb-multiarch gcc-aarch64-linux-gnu"
SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo"
update=""
if ! dpkg --print-foreign-architectures | grep -qx arm64; then
	echo "setup-arm64: dpkg --add-architecture arm64"
	$SUDO dpkg --add-architecture arm64
	update=yes
fi
missing=""
for p in $PACKAGES; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$update" ] || [ -n "$missing" ]; then
	$SUDO apt-get update -qq
fi
if [ -n "$missing" ]; then
	echo "setup-arm64: installing$missing"
	DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi
