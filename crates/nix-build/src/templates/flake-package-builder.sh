# Builder of a fleet deployment package of a flake host. Inputs: flake (the flake's source as Nix
# copied it, with its flake.lock), inputs (every locked input's source), attr, toplevel,
# switchTemplate, readmeTemplate.
set -eu
mkdir -p "$out/inputs"
# A copy, not a link, of the store copy fleet evaluated: Nix (2.8) refuses a flake whose path is
# a symlink. `nixos-rebuild switch --flake <package>/flake#ATTR` evaluates the very same source,
# and its flake.lock resolves to the inputs below (in the store, referenced by this package, so
# copied with it: no network needed).
cp -R "$flake" "$out/flake"
chmod -R u+w "$out/flake"
for i in $inputs; do
  n=${i#/nix/store/}
  [ -e "$out/inputs/$n" ] || ln -s "$i" "$out/inputs/$n"
done
ln -s "$toplevel" "$out/system"
sed -e "s|@toplevel@|$toplevel|g" "$switchTemplate" > "$out/switch"
chmod 555 "$out/switch"
sed -e "s|@attr@|$attr|g" "$readmeTemplate" > "$out/README.md"
