# A benchmark blob: about $bytes bytes of real shared libraries from $libDir, starting at a
# different library for every index so the blobs differ.
set -eu
mkdir -p "$out/lib"
printf 'bench blob %s seed %s\n' "$index" "$seed" > "$out/BLOB"
files=$(find "$libDir" -maxdepth 1 -type f -name '*.so*' | LC_ALL=C sort)
count=$(printf '%s\n' "$files" | wc -l)
[ "$count" -gt 0 ] || { echo "no libraries in $libDir" >&2; exit 1; }
i=$(( (index * 7 + ${offset:-0}) % count ))
total=0
n=0
while [ "$total" -lt "$bytes" ] && [ "$n" -lt "$count" ]; do
  f=$(printf '%s\n' "$files" | sed -n "$((i + 1))p")
  size=$(stat -c %s "$f")
  remaining=$((bytes - total))
  if [ "$size" -gt "$remaining" ]; then
    head -c "$remaining" "$f" > "$out/lib/$n-$(basename "$f")"
    size=$remaining
  else
    cp "$f" "$out/lib/$n-$(basename "$f")"
  fi
  total=$((total + size))
  n=$((n + 1))
  i=$(( (i + 1) % count ))
done
