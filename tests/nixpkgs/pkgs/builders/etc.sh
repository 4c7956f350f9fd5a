# /etc of the system: `etcScript` calls install_etc <name> <store file> once per file.
set -eu
mkdir -p "$out/etc"
install_etc() {
  mkdir -p "$(dirname "$out/etc/$1")"
  cp "$2" "$out/etc/$1"
}
eval "$etcScript"
