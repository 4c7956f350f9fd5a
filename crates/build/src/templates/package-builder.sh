# Builder of a fleet deployment package. Inputs: config (folder), configName, nixpkgs, toplevel,
# switchTemplate, readmeTemplate.
set -eu
mkdir -p "$out"
# The store copy the host was evaluated from (a link, not a copy: `<nixos-config>` resolved
# through it is the very path fleet evaluated, so copySystemConfiguration gives the same system).
ln -s "$config" "$out/config"
ln -s "config/$configName" "$out/configuration.nix"
ln -s "$nixpkgs" "$out/nixpkgs"
ln -s "$toplevel" "$out/system"
sed -e "s|@toplevel@|$toplevel|g" "$switchTemplate" > "$out/switch"
chmod 555 "$out/switch"
cp "$readmeTemplate" "$out/README.md"
