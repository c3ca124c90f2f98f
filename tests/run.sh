#!/usr/bin/env bash
# tablecast's one test command (the README's second command; .ci/run calls it).
#
#   bash tests/run.sh
#
# On a fresh Debian 12 machine it installs what the tests need when it is
# missing (apt: chromium, redis-server, ffmpeg, nftables, coturn, openssl, python3-pip, GStreamer with its Python bindings;
# npm: playwright-core; PyPI: aiortc; aiortc and GStreamer's webrtcbin are the third-party
# WHIP publishers; crates.io: cargo-fuzz), builds the release binary, runs every Rust unit and
# integration test, a short run of every fuzz target, then the headless-Chromium tests in
# tests/browser/.
# Rust itself is not installed here: it needs a toolchain new enough for
# edition 2024 (https://rustup.rs); Debian 12's rustc is too old.
#
# Exits non-zero if any step fails. A failing `cargo test` does not stop the
# browser tests (one run shows every failure), but the exit status says so.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }
die() { printf '\nFAILED: %s\n' "$*" >&2; exit 1; }

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || die "not root and no sudo: install the packages listed in tests/run.sh by hand"
  SUDO=(sudo)
fi

# ---------------------------------------------------------------------------
step "system packages"
# Debian 12's simple-whip-client is not used: it links libsoup2 while bookworm's libnice links
# libsoup3, and it aborts at start ("Using libsoup2 and libsoup3 in the same process is not
# supported"). The third-party publishers are aiortc from PyPI and the same GStreamer webrtcbin
# driven from Debian's /usr/bin/python3 (tests/third_party/gst_whip.py): the packages after
# ffmpeg are its Python bindings, libnice, and the x264/Opus encoders it publishes with.
# nftables: tests that cut one path between two node processes (tests/common/nft.rs), and the
# UDP block of tests/browser/turn.test.mjs. coturn: the TURN server that test relays through;
# openssl makes the certificate of its TURN over TLS.
APT_PACKAGES=(chromium redis-server ffmpeg nftables coturn openssl
  python3-gst-1.0 gir1.2-gst-plugins-bad-1.0 gir1.2-nice-0.1 gstreamer1.0-nice
  gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad
  gstreamer1.0-plugins-ugly)
installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  installed "$pkg" || missing+=("$pkg")
done
# Node may come from elsewhere (e.g. NodeSource, which bundles npm and conflicts
# with Debian's npm package), so ask for the commands, not the packages.
command -v node >/dev/null || missing+=(nodejs)
command -v npm >/dev/null || missing+=(npm)
command -v python3 >/dev/null || missing+=(python3)
python3 -m pip --version >/dev/null 2>&1 || missing+=(python3-pip)
if [ "${#missing[@]}" -gt 0 ]; then
  echo "installing: ${missing[*]}"
  "${SUDO[@]}" apt-get update
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
else
  echo "all present: ${APT_PACKAGES[*]} node npm"
fi

# ---------------------------------------------------------------------------
step "npm ci (tests/browser)"
node_major=$(node -p 'process.versions.node.split(".")[0]')
[ "$node_major" -ge 18 ] || die "node $(node --version) is too old: the browser tests need node 18 or newer"
(cd tests/browser && npm ci --no-audit --no-fund)

# ---------------------------------------------------------------------------
step "pip install aiortc (tests/third_party/.pylib)"
if [ ! -d tests/third_party/.pylib/aiortc ]; then
  # --target keeps it out of the system Python; PEP 668 needs the flag even so on Debian 12.
  python3 -m pip install --quiet --disable-pip-version-check --target tests/third_party/.pylib \
    --break-system-packages 'aiortc==1.16.0' 'av==18.1.0' \
    || python3 -m pip install --quiet --disable-pip-version-check --target tests/third_party/.pylib \
    'aiortc==1.16.0' 'av==18.1.0'
else
  echo "already installed"
fi

# ---------------------------------------------------------------------------
if ! command -v cargo >/dev/null && [ -x "$HOME/.cargo/bin/cargo" ]; then
  export PATH="$HOME/.cargo/bin:$PATH"
fi
command -v cargo >/dev/null || die "cargo not found: install a Rust toolchain with edition 2024 support (https://rustup.rs), then run this again"

step "cargo build --release"
cargo build --release

failed=()

step "cargo test --release"
cargo test --release || failed+=("cargo test --release")

# ---------------------------------------------------------------------------
# Every fuzz target in fuzz/ built and run for a few seconds from its seeds (docs/reliability.md).
step "tests/fuzz_smoke.sh (cargo-fuzz targets, a few seconds each)"
bash tests/fuzz_smoke.sh || failed+=("tests/fuzz_smoke.sh")

# ---------------------------------------------------------------------------
# Files one at a time: the browser tests measure real-time media and should
# not share the CPU with each other.
browser_tests=(tests/browser/*.test.mjs)
step "node --test tests/browser/ (${#browser_tests[@]} files; logs and screenshots in tests/browser/.artifacts/)"
concurrency=()
if node --help 2>/dev/null | grep -q -- '--test-concurrency'; then
  concurrency=(--test-concurrency=1)
fi
node --test "${concurrency[@]}" "${browser_tests[@]}" || failed+=("node --test tests/browser/")

if [ "${#failed[@]}" -gt 0 ]; then
  printf '\nFAILED: %s\n' "${failed[@]}" >&2
  exit 1
fi
printf '\n==> all tests passed\n'
