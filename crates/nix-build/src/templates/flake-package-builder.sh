# Builder of a fleet deployment package of a flake host. Inputs: flake (the flake's source as Nix
# copied it, with its flake.lock), inputs (every locked input's source), attr, toplevel,
# switchTemplate, readmeTemplate.
set -eu
mkdir -p "$out/inputs"
# A link to the store copy: `nixos-rebuild switch --flake <package>/flake#ATTR` evaluates the
# very source fleet evaluated, and its flake.lock resolves to the inputs below (in the store,
# referenced by this package, so copied with it: no network needed).
ln -s "$flake" "$out/flake"
for i in $inputs; do
  n=${i#/nix/store/}
  [ -e "$out/inputs/$n" ] || ln -s "$i" "$out/inputs/$n"
done
ln -s "$toplevel" "$out/system"
sed -e "s|@toplevel@|$toplevel|g" "$switchTemplate" > "$out/switch"
chmod 555 "$out/switch"
sed -e "s|@attr@|$attr|g" "$readmeTemplate" > "$out/README.md"
