#!/bin/sh
# Installs cw: the release binary for this OS and CPU, checked against the
# release's SHA256SUMS before it is put in place.
#   curl -fsSL https://…/install.sh | sh
# CW_RELEASE_URL: where the release's files are (default: the latest GitHub release)
# CW_INSTALL_DIR: where cw goes (default: ~/.local/bin)
set -eu

REPO_URL="${CW_REPO_URL:-https://github.com/codewire/cw}"
BASE="${CW_RELEASE_URL:-$REPO_URL/releases/latest/download}"
DIR="${CW_INSTALL_DIR:-$HOME/.local/bin}"

fail() {
  echo "cw install: $*" >&2
  exit 1
}

case "$(uname -s)" in
  Linux) os=unknown-linux-gnu ;;
  Darwin) os=apple-darwin ;;
  *) fail "no cw build for $(uname -s) (builds: Linux and macOS)" ;;
esac
case "$(uname -m)" in
  x86_64 | amd64) arch=x86_64 ;;
  aarch64 | arm64) arch=aarch64 ;;
  *) fail "no cw build for the $(uname -m) CPU (builds: x86_64 and aarch64)" ;;
esac
name="cw-$arch-$os"

fetch() { # URL FILE
  if command -v curl >/dev/null 2>&1; then
    curl -fsSL --proto '=https,http' -o "$2" "$1"
  elif command -v wget >/dev/null 2>&1; then
    wget -q -O "$2" "$1"
  else
    fail "needs curl or wget"
  fi
}

sha256() {
  if command -v sha256sum >/dev/null 2>&1; then
    sha256sum "$1" | cut -d' ' -f1
  elif command -v shasum >/dev/null 2>&1; then
    shasum -a 256 "$1" | cut -d' ' -f1
  else
    fail "needs sha256sum or shasum to check the download"
  fi
}

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT INT TERM
fetch "$BASE/SHA256SUMS" "$tmp/SHA256SUMS" || fail "cannot download $BASE/SHA256SUMS"
want=$(awk -v n="$name" '$2 == n || $2 == "*" n { print $1 }' "$tmp/SHA256SUMS")
[ -n "$want" ] || fail "the release has no $name"
fetch "$BASE/$name" "$tmp/cw" || fail "cannot download $BASE/$name"
got=$(sha256 "$tmp/cw")
[ "$got" = "$want" ] || fail "checksum mismatch for $name: got $got, want $want; nothing installed"
chmod 0755 "$tmp/cw"
version=$("$tmp/cw" --version 2>/dev/null) || fail "the downloaded $name does not run here"
mkdir -p "$DIR"
mv "$tmp/cw" "$DIR/cw"
echo "installed $version as $DIR/cw"
case ":$PATH:" in
  *":$DIR:"*) ;;
  *) echo "add $DIR to your PATH to run cw" ;;
esac
