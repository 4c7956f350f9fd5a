# /etc of the system: file i is named $etcname_<i>, its text is in the file $etc_<i>Path
# (passAsFile), for i in 0..count-1.
set -eu
mkdir -p "$out/etc"
i=0
while [ "$i" -lt "$count" ]; do
  eval "name=\$etcname_$i; text=\$etc_${i}Path"
  mkdir -p "$(dirname "$out/etc/$name")"
  cp "$text" "$out/etc/$name"
  i=$((i + 1))
done
