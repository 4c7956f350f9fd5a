# Builder of a fleet deployment package. Inputs: config (folder), configName, nixPath, nixpkgs, toplevel,
# switchTemplate, readmeTemplate.
set -eu
mkdir -p "$out"
# The store copy the host was evaluated from (a link, not a copy: `<nixos-config>` resolved
# through it is the very path fleet evaluated, so copySystemConfiguration gives the same system).
ln -s "$config" "$out/config"
ln -s "config/$configName" "$out/configuration.nix"
ln -s "$nixpkgs" "$out/nixpkgs"
# The search path of the evaluation: nixpkgs and fleet.toml's nix-path entries (NAME=PATH).
mkdir "$out/nix-path"
ln -s "$nixpkgs" "$out/nix-path/nixpkgs"
for entry in $nixPath; do
  ln -s "${entry#*=}" "$out/nix-path/${entry%%=*}"
done
ln -s "$toplevel" "$out/system"
sed -e "s|@toplevel@|$toplevel|g" "$switchTemplate" > "$out/switch"
chmod 555 "$out/switch"
cp "$readmeTemplate" "$out/README.md"
