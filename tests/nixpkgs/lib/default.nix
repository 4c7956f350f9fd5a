# A tiny subset of nixpkgs' lib, enough for the stand-in and for configurations.
let
  isDerivation = v: builtins.isAttrs v && (v.type or null) == "derivation";

  escapeShellArg = s: "'" + builtins.replaceStrings [ "'" ] [ "'\\''" ] (toString s) + "'";

  unique = builtins.foldl' (acc: x: if builtins.elem x acc then acc else acc ++ [ x ]) [ ];

  mkOverride = priority: content: { _type = "override"; inherit priority content; };

  lib = {
    inherit isDerivation escapeShellArg unique mkOverride;
    systems = import ./systems.nix;
    trivial = import ./trivial.nix;
    inherit (import ./trivial.nix) release versionSuffix;
    version = lib.trivial.release + lib.trivial.versionSuffix;

    # Module system properties (nixpkgs' priorities: lower wins).
    mkOptionDefault = mkOverride 1500;
    mkDefault = mkOverride 1000;
    mkImageMediaOverride = mkOverride 60;
    mkForce = mkOverride 50;
    mkVMOverride = mkOverride 10;
    mkIf = condition: content: { _type = "if"; inherit condition content; };
    mkMerge = contents: { _type = "merge"; inherit contents; };
    # List order is not modelled: mkBefore/mkAfter/mkOrder keep the definition as it is.
    mkOrder = priority: content: { _type = "order"; inherit priority content; };
    mkBefore = lib.mkOrder 500;
    mkAfter = lib.mkOrder 1500;
    mkOption = attrs: attrs // { _type = "option"; };
    mkEnableOption = name: lib.mkOption { default = false; description = "Whether to enable ${name}."; };
    # Types are not checked; these only let option declarations evaluate.
    types = let t = name: { inherit name; }; f = name: _: t name; in {
      str = t "str"; bool = t "bool"; int = t "int"; path = t "path"; package = t "package";
      lines = t "lines"; anything = t "anything"; attrs = t "attrs"; raw = t "raw";
      unspecified = t "unspecified"; port = t "port";
      listOf = f "listOf"; attrsOf = f "attrsOf"; nullOr = f "nullOr"; submodule = f "submodule";
      enum = f "enum"; either = a: _: t "either"; oneOf = f "oneOf";
    };
    evalModules = (import ./modules.nix { inherit lib; }).evalModules;

    optional = cond: v: if cond then [ v ] else [ ];
    optionals = cond: l: if cond then l else [ ];
    optionalString = cond: s: if cond then s else "";
    optionalAttrs = cond: a: if cond then a else { };
    concatStringsSep = builtins.concatStringsSep;
    concatMapStrings = f: l: builtins.concatStringsSep "" (map f l);
    concatMap = builtins.concatMap;
    attrNames = builtins.attrNames;
    attrValues = builtins.attrValues;
    mapAttrs = builtins.mapAttrs;
    mapAttrs' = f: set: builtins.listToAttrs (map (n: f n set.${n}) (builtins.attrNames set));
    filterAttrs = pred: set: builtins.listToAttrs (builtins.concatMap
      (n: if pred n set.${n} then [ { name = n; value = set.${n}; } ] else [ ])
      (builtins.attrNames set));
    genAttrs = names: f: builtins.listToAttrs (map (n: { name = n; value = f n; }) names);
    elem = builtins.elem;
    id = x: x;
    # Store path names allow [A-Za-z0-9+._?=-]; everything else becomes '-'.
    sanitizeName = s:
      let
        ok = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+-._?=";
        chars = builtins.genList (i: builtins.substring i 1 s) (builtins.stringLength s);
        okChars = builtins.genList (i: builtins.substring i 1 ok) (builtins.stringLength ok);
      in
      builtins.concatStringsSep "" (map (c: if builtins.elem c okChars then c else "-") chars);
  };
in
lib
