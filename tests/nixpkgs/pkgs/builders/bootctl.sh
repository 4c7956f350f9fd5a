#!/bin/sh
# bootctl of the nixpkgs stand-in: the parts of systemd-boot's that fleet and the testbed use.
#   bootctl set-default ID    the default entry (loader.conf `default`)
#   bootctl set-oneshot ID    boot ID once, at the next boot (the testbed's reboot consumes it)
#   bootctl list              the entries, with their toplevel
#   bootctl status            the default and one-shot entries
# ID is an entry file name (nixos-generation-3.conf) or its name without .conf. Files live in
# /boot/loader: loader.conf, entries/, oneshot (the stand-in's LoaderEntryOneShot EFI variable).
set -eu
loader=/boot/loader
entry_id() {
  case "$1" in *.conf) printf '%s' "$1" ;; *) printf '%s.conf' "$1" ;; esac
}
need_entry() {
  id="$(entry_id "$1")"
  [ -f "$loader/entries/$id" ] || { echo "bootctl: no boot entry $id in $loader/entries" >&2; exit 1; }
  printf '%s' "$id"
}
case "${1-}" in
  set-default)
    id="$(need_entry "${2:?usage: bootctl set-default ID}")"
    tmp="$loader/loader.conf.bootctl.$$"
    if [ -f "$loader/loader.conf" ]; then
      grep -v '^default ' "$loader/loader.conf" > "$tmp" || true
    else
      : > "$tmp"
    fi
    printf 'default %s\n' "$id" >> "$tmp"
    mv -f "$tmp" "$loader/loader.conf"
    ;;
  set-oneshot)
    id="$(need_entry "${2:?usage: bootctl set-oneshot ID}")"
    printf '%s\n' "$id" > "$loader/oneshot.tmp" && mv -f "$loader/oneshot.tmp" "$loader/oneshot"
    ;;
  list)
    for e in "$loader"/entries/*.conf; do
      [ -f "$e" ] || continue
      printf '%s %s\n' "$(basename "$e")" "$(sed -n 's/^toplevel //p' "$e")"
    done
    ;;
  status)
    printf 'default: %s\n' "$(sed -n 's/^default //p' "$loader/loader.conf" 2>/dev/null)"
    printf 'oneshot: %s\n' "$(cat "$loader/oneshot" 2>/dev/null || true)"
    ;;
  *)
    echo "usage: bootctl set-default ID | set-oneshot ID | list | status" >&2
    exit 1
    ;;
esac
