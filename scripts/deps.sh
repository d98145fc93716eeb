#!/usr/bin/env bash
# deps.sh — makes sure the Debian packages bora builds against are present.
# As root it installs what is missing with apt-get; otherwise it prints the exact command and fails.
set -euo pipefail
pkgs=(build-essential pkg-config libcmocka-dev libinih-dev libjansson-dev libpcre2-dev
      libsodium-dev liburing-dev libjemalloc-dev libedit-dev)
# Optional extras used by end-to-end tests (socat for the serial console, iproute2 for netns).
extras=(socat iproute2 ethtool openssh-server dpdk-dev libdpdk-dev)
# First ask the compiler: where the headers and libraries are already reachable (installed, or
# unpacked elsewhere and pointed at by CPATH/LIBRARY_PATH), nothing needs installing.
probe='#include <cmocka.h>
#include <ini.h>
#include <jansson.h>
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <sodium.h>
#include <liburing.h>
#include <jemalloc/jemalloc.h>
#include <histedit.h>
int main(void) { return 0; }'
cc=${CC:-cc}
# Tools the end-to-end tests use (their tests skip without them) and DPDK (borad is built
# without its DPDK port when absent): installed as root when apt-get works, never fatal.
install_extras() {
    [ "${BORA_DEPS_EXTRAS:-1}" = 1 ] && [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null || return 0
    command -v socat >/dev/null && command -v sshd >/dev/null && command -v ethtool >/dev/null &&
        pkg-config --exists libdpdk 2>/dev/null && return 0
    { [ -n "$(ls /var/lib/apt/lists/ 2>/dev/null | grep -v lock)" ] || timeout 300 apt-get update -qq >/dev/null 2>&1; }
    DEBIAN_FRONTEND=noninteractive timeout 900 apt-get install -y -qq --no-install-recommends "${extras[@]}" \
        >/dev/null 2>&1 || echo "deps: could not install ${extras[*]} (their tests will skip)" >&2
    return 0
}
if [ "${BORA_DEPS_FORCE:-0}" != 1 ] && command -v "$cc" >/dev/null 2>&1 &&
   printf '%s\n' "$probe" | "$cc" -x c - -o /dev/null -lcmocka -linih -ljansson -lpcre2-8 -lsodium -luring -ljemalloc -ledit \
       >/dev/null 2>&1; then
    install_extras
    exit 0
fi
missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
    install_extras
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    # Not Debian: trust the compiler to find the headers; the build will name what is missing.
    echo "deps: no apt-get; make sure these are installed: ${missing[*]}" >&2
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "deps: missing packages: ${missing[*]}" >&2
    echo "deps: run: sudo apt-get update && sudo apt-get install -y ${missing[*]}" >&2
    exit 1
fi
echo "deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
install_extras
