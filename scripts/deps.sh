#!/bin/sh
# Installs the Debian packages Postern needs to build, run and test, when
# any is missing. Safe to run again; needs root (or sudo) only to install.
set -eu

PACKAGES="gcc make meson ninja-build pkg-config
libevent-dev libssl-dev libsqlite3-dev libsodium-dev libcmocka-dev libunbound-dev
libgmime-3.0-dev isync liboath-dev libjansson-dev libqrencode-dev
openssl python3 python3-pytest python3-aiosmtpd swaks libnet-ssleay-perl curl unbound"

missing=""
for p in $PACKAGES; do
	if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed"; then
		missing="$missing $p"
	fi
done
[ -z "$missing" ] && exit 0

echo "installing:$missing"
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# shellcheck disable=SC2086
$SUDO apt-get install -y -qq --no-install-recommends $missing </dev/null
