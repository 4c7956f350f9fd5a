# Builder of an ordinary stand-in package: bin/<pname> (a shell script) and share/<pname>/.
set -eu
mkdir -p "$out/bin" "$out/share/$pname"
{
  echo '#!/bin/sh'
  echo "# $pname $version (fleet nixpkgs stand-in, host platform $hostPlatform)"
  for d in $deps; do echo "# depends on $d"; done
  echo "echo '$pname $version'"
} > "$out/bin/$pname"
chmod +x "$out/bin/$pname"
printf '%s\n' "$version" > "$out/share/$pname/VERSION"
printf '%s\n' "$deps" > "$out/share/$pname/DEPENDENCIES"
