#!/bin/sh
# Installs a headless Chromium for tests/test_report.py, which renders the HTML
# report to a PNG to prove its plots are really drawn by a browser.
# Debian/Ubuntu only; needs root (CI images usually run as root; otherwise sudo).
# Without it, that one test is skipped and says why.
set -eu
if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then
    echo "chromium already installed: $(command -v chromium || command -v chromium-browser)"
    exit 0
fi
SUDO=""
if [ "$(id -u)" != "0" ]; then
    SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update
# fonts-dejavu-core: text in the screenshot needs at least one real font.
$SUDO apt-get install -y --no-install-recommends chromium fonts-dejavu-core
chromium --version
