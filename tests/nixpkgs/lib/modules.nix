# A small module system, close enough to nixpkgs' lib/modules.nix as seen from a configuration:
# priorities (mkOverride, mkDefault, mkForce, mkOptionDefault), mkIf, mkMerge, imports (each file
# once), `config`/`options` modules with mkOption defaults, and the real error for two different
# definitions of a value that does not merge. There is no type checking: attrsets merge per
# attribute, lists concatenate, anything else must be defined once (or equally) at the winning
# priority.
{ lib }:
let
  inherit (builtins) isAttrs isList isFunction isPath isString concatMap filter foldl' head
    length attrNames elem elemAt concatStringsSep listToAttrs all any;

  defaultPriority = 100;

  # Paths whose attrset values are single values (not namespaces), paths whose definitions are
  # modules (collected as imports), attrsOf-like namespaces (an entry whose definitions are all
  # disabled by mkIf is left out, as attrsOf does), and `apply` functions.
  leafPaths = [
    "nixpkgs.hostPlatform"
    "nixpkgs.buildPlatform"
    "nixpkgs.localSystem"
    "nixpkgs.crossSystem"
    "nixpkgs.pkgs"
    "fleet.bench"
  ];
  attrsOfPaths = [ "environment.etc" "specialisation" "fleet.packageVersions" "systemd.services" "users.users" ];
  isModulePath = path: length path == 3 && head path == "specialisation" && elemAt path 2 == "configuration";

  showPath = path: concatStringsSep "." path;

  isNamespace = path: v:
    isAttrs v && !(lib.isDerivation v) && !(v ? _type) && !(elem (showPath path) leafPaths)
    && !(isModulePath path);

  # A definition is { file; value; prio (null = default); conds }. mkIf and mkOverride on an
  # attrset are pushed into its attributes (without evaluating the condition, as nixpkgs does), so
  # the shape of `config` never depends on a condition.
  pushDown = path: def:
    let
      v = def.value;
      t = if isAttrs v && !(lib.isDerivation v) then v._type or null else null;
    in
    if t == "merge" then concatMap (c: pushDown path (def // { value = c; })) v.contents
    else if t == "if" then
      map
        (d:
          if isNamespace path d.value
          then d // { value = builtins.mapAttrs (_: c: lib.mkIf v.condition c) d.value; }
          else d // { conds = d.conds ++ [ v.condition ]; })
        (pushDown path (def // { value = v.content; }))
    else if t == "override" then
      map
        (d:
          if isNamespace path d.value
          then d // { value = builtins.mapAttrs (_: c: lib.mkOverride v.priority c) d.value; }
          else d // { prio = v.priority; })
        (pushDown path (def // { value = v.content; }))
    else if t == "order" then pushDown path (def // { value = v.content; })
    else [ def ];

  discharged = v:
    let t = if isAttrs v && !(lib.isDerivation v) then v._type or null else null; in
    if t == "if" then v.condition && discharged v.content
    else if t == "override" || t == "order" then discharged v.content
    else if t == "merge" then any discharged v.contents
    else true;

  prioOf = d: if d.prio == null then defaultPriority else d.prio;

  showValue = v:
    if isString v then builtins.toJSON v
    else if builtins.isBool v then (if v then "true" else "false")
    else if v == null then "null"
    else if builtins.isInt v || builtins.isFloat v then toString v
    else if isPath v then toString v
    else if lib.isDerivation v then "<derivation ${v.name or "?"}>"
    else if isAttrs v then
      "{ " + concatStringsSep " " (map (n: "${n} = ${if isAttrs v.${n} || isList v.${n} then "..." else showValue v.${n}};") (attrNames v)) + " }"
    else if isList v then "[ ... ]"
    else "<${builtins.typeOf v}>";

  conflict = path: defs:
    throw ("The option `${showPath path}' has conflicting definition values:\n"
      + concatStringsSep "" (map (d: "- In `${d.file}': ${showValue d.value}\n") defs)
      + "Use `lib.mkForce value` or `lib.mkDefault value` to change the priority on any of these definitions.");

  sameValue = a: b:
    if lib.isDerivation a && lib.isDerivation b then a.outPath == b.outPath
    else if isFunction a || isFunction b then false
    else a == b;

  applies = {
    "nixpkgs.hostPlatform" = lib.systems.elaborate;
    "nixpkgs.buildPlatform" = lib.systems.elaborate;
  };

  # Merge the definitions of one path.
  merge = path: defs0:
    let
      defs = concatMap (pushDown path) defs0;
    in
    if defs != [ ] && all (d: isNamespace path d.value) defs then mergeNamespace path defs
    else
      let
        active = filter (d: all (c: c) d.conds) defs;
        best = foldl' (m: d: if prioOf d < m then prioOf d else m) 1000000 active;
        winners = filter (d: prioOf d == best) active;
        first = head winners;
        value =
          if active == [ ] then throw "The option `${showPath path}' is used but not defined."
          else if isModulePath path then { imports = map (d: d.value) winners; }
          else if all (d: isNamespace path d.value) winners then mergeNamespace path winners
          else if all (d: isList d.value) winners then concatMap (d: d.value) winners
          else if all (d: sameValue first.value d.value) winners then first.value
          else conflict path winners;
      in
      (applies.${showPath path} or (x: x)) value;

  mergeNamespace = path: defs:
    let
      names = lib.unique (concatMap (d: attrNames d.value) defs);
      childDefs = n: concatMap (d: if d.value ? ${n} then [ (d // { value = d.value.${n}; }) ] else [ ]) defs;
      # attrsOf: an entry is there when one of its definitions survives its own mkIfs.
      defined = n: any (d: discharged d.value) (childDefs n);
      kept = if elem (showPath path) attrsOfPaths then filter defined names else names;
    in
    listToAttrs (map (n: { name = n; value = merge (path ++ [ n ]) (childDefs n); }) kept);

  # Option declarations (mkOption with a default) give definitions at mkOptionDefault priority.
  optionDefaults = file: opts:
    if isAttrs opts && (opts._type or null) == "option" then
      (if opts ? default then [ { inherit file; value = lib.mkOptionDefault opts.default; } ] else [ ])
    else if isAttrs opts then
      concatMap (n: map (d: d // { value = { ${n} = d.value; }; }) (optionDefaults file opts.${n})) (attrNames opts)
    else [ ];

  moduleKeys = [ "imports" "_file" "key" "disabledModules" "meta" "freeformType" ];

  # Every module reachable from `modules` (a list of { file; module; }), each file once, depth
  # first; returns the definitions ({ file; value; }) in that order.
  collect = args: modules:
    let
      load = m: if isPath m || isString m then import m else m;
      fileOf = m: parent: if isPath m || isString m then toString m else parent;
      visit = acc: item:
        let
          key = if isPath item.module || isString item.module then toString item.module else null;
        in
        if key != null && acc.seen ? ${key} then acc
        else
          let
            f = load item.module;
            file = fileOf item.module item.parent;
            r0 = if isFunction f then f args else f;
            r = if (r0._type or null) == "if" || (r0._type or null) == "override" || (r0._type or null) == "merge"
              then { config = r0; } else r0;
            defsOf =
              if r ? config || r ? options then
                optionDefaults file (r.options or { }) ++ (if r ? config then [ { inherit file; value = r.config; } ] else [ ])
              else [ { inherit file; value = builtins.removeAttrs r moduleKeys; } ];
            acc1 = {
              seen = if key == null then acc.seen else acc.seen // { ${key} = true; };
              defs = acc.defs ++ defsOf;
            };
          in
          foldl' visit acc1 (map (m: { module = m; parent = file; }) (r.imports or [ ]));
    in
    (foldl' visit { seen = { }; defs = [ ]; } modules).defs;

  # config = the merge of every module's definitions, with `args` (which holds `config` itself)
  # given to every module function.
  evalModules = { modules, specialArgs ? { }, extraArgs ? { } }:
    let
      args = specialArgs // extraArgs // { inherit config lib options; };
      options = { };
      # `modules`: a list of { module; file; } (file: the name errors give an anonymous module).
      defs = collect args (map (m: { inherit (m) module; parent = m.file; }) modules);
      config = merge [ ] (map (d: d // { prio = null; conds = [ ]; }) defs);
    in
    { inherit config options; };
in
{
  inherit evalModules showValue;
}
