#!/usr/bin/env bash
# Builds the Debian package target/debian/beta9-sandbox_<version>_amd64.deb from the release
# binaries (cargo-deb; metadata in installer/Cargo.toml, maintainer scripts and man pages in
# packaging/) and checks it with lintian, which must find nothing (errors or warnings).
#   hack/package.sh [--no-lintian]
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cargo-deb >/dev/null && command -v lintian >/dev/null || hack/install-deps.sh
cargo build --release --workspace --bins
mkdir -p target/debian
rm -f target/debian/beta9-sandbox_*.deb
gzip -9nc packaging/debian/changelog >target/debian/changelog.gz
# The release profile strips already; --no-build packages exactly what the tests run.
cargo deb -p beta9-sandbox-install --no-build --no-strip --target x86_64-unknown-linux-gnu --output target/debian/ >/dev/null
deb=$(ls target/debian/beta9-sandbox_*_amd64.deb)
echo "package.sh: built $deb"
[ "${1:-}" = --no-lintian ] && exit 0
# --fail-on warning: a lintian warning fails the build, as an error does; each override in
# packaging/ says why it is one.
lintian --fail-on error,warning --tag-display-limit 0 "$deb"
echo "package.sh: lintian found nothing in $deb"
