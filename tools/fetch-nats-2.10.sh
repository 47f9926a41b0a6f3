#!/bin/sh
# Downloads Debian trixie's nats-server 2.10.27 package and extracts the server binary into a folder
# (default: ./nats-2.10), without installing anything. 2.10 is the first release with JetStream's
# `sync_interval: always` (fsync after every write), the peer row comparable with the node's fsync at
# every hop; Debian bookworm's package (2.9.10) cannot do that. Then:
#
#   exchange-node bench --peer nats --nats-server ./nats-2.10/usr/sbin/nats-server
#
# Needs curl (or wget), dpkg-deb and sha256sum. Check the file name and checksum against
#   http://deb.debian.org/debian/dists/trixie/main/binary-amd64/Packages.xz
# (Package: nats-server) if the download answers 404: trixie may have moved to a newer build.
set -eu
DEST=${1:-./nats-2.10}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
FILE=nats-server_2.10.27-1+b2_amd64.deb
SHA256=6d913ac987b78734c08537c2adeb1526cf735f216173a9170d94b185fcfe6f8a
URL="$MIRROR/pool/main/n/nats-server/$FILE"

mkdir -p "$DEST"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "downloading $URL"
if command -v curl >/dev/null; then curl -fsSL -o "$tmp/$FILE" "$URL"; else wget -q -O "$tmp/$FILE" "$URL"; fi
echo "$SHA256  $tmp/$FILE" | sha256sum -c - >/dev/null || { echo "checksum mismatch for $FILE: not extracting" >&2; exit 1; }
dpkg-deb -x "$tmp/$FILE" "$DEST"
BIN="$DEST/usr/sbin/nats-server"
"$BIN" --version
echo "nats-server extracted to $BIN"
