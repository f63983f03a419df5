#!/usr/bin/env bash
# Install Debian's chromium for the report's browser test (tests/unit/report/test_report.py).
# Idempotent, and never fails the build: without chromium that test is skipped with its reason.
set -u

if [ -x /usr/bin/chromium ]; then
    echo "install_chromium: already installed: $(/usr/bin/chromium --version 2>/dev/null | head -n1)"
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "install_chromium: no apt-get on this machine; the browser test will be skipped"
    exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        SUDO="sudo -n"
    else
        echo "install_chromium: not root and no password-less sudo; the browser test will be skipped"
        exit 0
    fi
fi
export DEBIAN_FRONTEND=noninteractive
# Wait for a concurrent apt/dpkg run instead of failing on its lock.
APT=(apt-get -o DPkg::Lock::Timeout=120 -qq)
# fonts-dejavu-core: without any font, the screenshots would show boxes instead of text.
if $SUDO "${APT[@]}" update >/dev/null \
    && $SUDO "${APT[@]}" install -y --no-install-recommends chromium fonts-dejavu-core >/dev/null; then
    echo "install_chromium: installed $(/usr/bin/chromium --version 2>/dev/null | head -n1)"
else
    echo "install_chromium: could not install chromium (apt failed); the browser test will be skipped"
fi
exit 0
