#!/bin/sh
# Make a deterministic tarball of this stand-in and print a fetchTarball pin for it:
#   tests/nixpkgs/make-pin.sh /tmp/nixpkgs.tar.gz
#   url = "file:///tmp/nixpkgs.tar.gz"
#   sha256 = "0abc..."
# The sha256 is what `builtins.fetchTarball { url; sha256; }` expects (hash of the unpacked NAR,
# nix32), as printed by `nix-prefetch-url --unpack`. Works offline with file:// URLs.
set -eu
out="${1:?usage: make-pin.sh <out.tar.gz>}"
here="$(cd "$(dirname "$0")" && pwd)"
case "$out" in /*) ;; *) out="$(pwd)/$out" ;; esac
tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner \
    --exclude='./nixpkgs/result*' \
    -C "$(dirname "$here")" -cf - "$(basename "$here")" | gzip -n -9 > "$out.tmp"
mv -f "$out.tmp" "$out"
# A URL: '%' and spaces percent-encoded (enough for temporary folders with spaces).
url="file://$(printf '%s' "$out" | sed -e 's/%/%25/g' -e 's/ /%20/g')"
sha256="$(NIX_CONFIG="${NIX_CONFIG:-substituters =}" nix-prefetch-url --unpack "$url")"
printf 'url = "%s"\nsha256 = "%s"\n' "$url" "$sha256"
