# Builder of a fleet deployment package of a flake host. Inputs: flake (the flake's source as Nix
# copied it, with its flake.lock), inputs (every locked input's source), attr, toplevel,
# switchTemplate, readmeTemplate.
set -eu
mkdir -p "$out/inputs"
# A link to the store copy fleet evaluated (a store path of its own): `nixos-rebuild switch
# --flake "$(readlink -f <package>/flake)#ATTR"` evaluates the very same source, and its
# flake.lock resolves to the inputs below (in the store, referenced by this package, so copied
# with it: no network needed). Resolved, because Nix 2.8 refuses a flake path that is a symlink
# and Nix 2.26+ one through a symlink, and takes a folder inside a store path as that store path.
ln -s "$flake" "$out/flake"
for i in $inputs; do
  n=${i#/nix/store/}
  [ -e "$out/inputs/$n" ] || ln -s "$i" "$out/inputs/$n"
done
ln -s "$toplevel" "$out/system"
sed -e "s|@toplevel@|$toplevel|g" "$switchTemplate" > "$out/switch"
chmod 555 "$out/switch"
sed -e "s|@attr@|$attr|g" "$readmeTemplate" > "$out/README.md"
