#!/usr/bin/env bash
# Headless Chromium for the browser tests (review page, HTML reports). Debian's package;
# Playwright drives it through its executable path, so no browser download is needed.
set -euo pipefail
command -v chromium >/dev/null 2>&1 && exit 0
echo "chromium not found; installing Debian's chromium package" >&2
export DEBIAN_FRONTEND=noninteractive
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends chromium
