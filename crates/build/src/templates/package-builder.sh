# Builder of a fleet deployment package. Inputs: config (folder), configName, nixpkgs, toplevel,
# switchTemplate, readmeTemplate.
set -eu
mkdir -p "$out"
cp -R "$config" "$out/config"
chmod -R u+w "$out/config"
ln -s "config/$configName" "$out/configuration.nix"
ln -s "$nixpkgs" "$out/nixpkgs"
ln -s "$toplevel" "$out/system"
sed -e "s|@toplevel@|$toplevel|g" "$switchTemplate" > "$out/switch"
chmod 555 "$out/switch"
cp "$readmeTemplate" "$out/README.md"
