# A firmware package: lib/firmware/<pname>/<pname>.bin.
set -eu
mkdir -p "$out/lib/firmware/$pname"
printf 'fake firmware %s %s\n' "$pname" "$version" > "$out/lib/firmware/$pname/$pname.bin"
