#!/usr/bin/env bash
# Builds hostbeat's .deb and .rpm into target/packages/ (or --out DIR):
#
#   packaging/build.sh                  # both packages, revision 1
#   packaging/build.sh --revision 2     # the same files as package revision 2
#   packaging/build.sh --tools-only     # only install cargo-deb and cargo-generate-rpm
#
# Installs the packaging tools at the versions below when missing, builds the
# stripped release binary, generates the man pages and completions from the CLI
# definition (cargo run -p xtask), then packs. Prints the path of each package.
set -euo pipefail
cd "$(dirname "$0")/.."

# Pinned so that a package built next year is built the same way.
CARGO_DEB_VERSION=3.8.0
CARGO_GENERATE_RPM_VERSION=0.21.1

out=target/packages
revision=1
tools_only=false
while [ $# -gt 0 ]; do
    case $1 in
    --out) out=$2; shift 2 ;;
    --revision) revision=$2; shift 2 ;;
    --tools-only) tools_only=true; shift ;;
    *) echo "packaging/build.sh: unknown argument $1 (see the top of this file)" >&2; exit 2 ;;
    esac
done

install_tool() { # crate version command
    if ! "$3" --version 2>/dev/null | grep -qF "$2"; then
        echo "packaging: installing $1 $2"
        cargo install "$1" --version "=$2" --locked --quiet
    fi
}
install_tool cargo-deb "$CARGO_DEB_VERSION" cargo-deb
install_tool cargo-generate-rpm "$CARGO_GENERATE_RPM_VERSION" cargo-generate-rpm
$tools_only && exit 0

cargo build --release --locked -p hostbeat
rm -rf target/assets
cargo run --locked --quiet -p xtask -- assets target/assets >/dev/null

mkdir -p "$out"
rm -f "$out"/hostbeat_*.deb "$out"/hostbeat-*.rpm
cargo deb --no-build --locked -p hostbeat --deb-revision "$revision" --output "$out" >/dev/null
cargo generate-rpm -p . --set-metadata "release = \"$revision\"" --output "$out/" >/dev/null
ls "$out"/hostbeat_*.deb "$out"/hostbeat-*.rpm
