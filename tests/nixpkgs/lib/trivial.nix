# lib.trivial's release and version facts, read like nixpkgs' lib/trivial.nix does: `.version-suffix`
# and `.git-revision` at the root of the source, when present (a GitHub tarball has neither).
let
  root = ./..;
  suffixFile = root + "/.version-suffix";
  revisionFile = root + "/.git-revision";
  fileContents = f:
    let s = builtins.readFile f; in
    if s != "" && builtins.substring (builtins.stringLength s - 1) 1 s == "\n"
    then builtins.substring 0 (builtins.stringLength s - 1) s else s;
in
{
  release = "24.05";
  # The stand-in's default suffix (real nixpkgs says "pre-git" without the file).
  versionSuffix = if builtins.pathExists suffixFile then fileContents suffixFile else ".20261124.fleet";
  revisionWithDefault = default: if builtins.pathExists revisionFile then fileContents revisionFile else default;
}
