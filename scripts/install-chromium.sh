#!/usr/bin/env bash
# The browser the playground's tests drive (tests/browser): Debian's Chromium, installed only
# when /usr/bin/chromium is missing (with sudo when not root). Playwright's own browser
# download is never used.
set -euo pipefail
if [ -x /usr/bin/chromium ]; then
    exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi
$SUDO apt-get update
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y chromium
