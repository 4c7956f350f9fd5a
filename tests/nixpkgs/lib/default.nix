# A tiny subset of nixpkgs' lib, enough for the stand-in and for configurations.
let
  isDerivation = v: builtins.isAttrs v && (v.type or null) == "derivation";

  # Merge two module results: attrsets merge recursively, lists concatenate,
  # anything else: the later definition wins. Derivations are leaves.
  mergeTwo = a: b:
    if builtins.isAttrs a && builtins.isAttrs b && !(isDerivation a) && !(isDerivation b) then
      a // builtins.mapAttrs (n: bv: if a ? ${n} then mergeTwo a.${n} bv else bv) b
    else if builtins.isList a && builtins.isList b then
      a ++ b
    else
      b;

  escapeShellArg = s: "'" + builtins.replaceStrings [ "'" ] [ "'\\''" ] (toString s) + "'";
in
{
  inherit isDerivation mergeTwo escapeShellArg;
  mergeAll = builtins.foldl' mergeTwo { };
  mkDefault = v: v;
  mkForce = v: v;
  mkOverride = _: v: v;
  mkIf = cond: v: if cond then v else { };
  optional = cond: v: if cond then [ v ] else [ ];
  optionals = cond: l: if cond then l else [ ];
  optionalString = cond: s: if cond then s else "";
  concatStringsSep = builtins.concatStringsSep;
  concatMapStrings = f: l: builtins.concatStringsSep "" (map f l);
  attrNames = builtins.attrNames;
  # Store path names allow [A-Za-z0-9+._?=-]; everything else becomes '-'.
  sanitizeName = s:
    let
      ok = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+-._?=";
      chars = builtins.genList (i: builtins.substring i 1 s) (builtins.stringLength s);
      okChars = builtins.genList (i: builtins.substring i 1 ok) (builtins.stringLength ok);
    in
    builtins.concatStringsSep "" (map (c: if builtins.elem c okChars then c else "-") chars);
}
