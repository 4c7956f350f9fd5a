# Stand-in for `<nixpkgs/nixos>`: `import ./nixos { configuration; system; }`.
# Returns { config; options; pkgs; system; } with config.system.build.toplevel == system
# (see ../README.md).
{ configuration
, system ? builtins.currentSystem
}:
let
  # Like nixos/default.nix: the `system` argument is only a default.
  systemDefault = [
    { module = { lib, ... }: { nixpkgs.system = lib.mkDefault system; }; file = toString ./default.nix; }
  ];
in
import ./lib/eval-config.nix {
  modules = [
    { module = configuration; file = if builtins.isPath configuration || builtins.isString configuration then toString configuration else "<unknown-file>"; }
  ] ++ systemDefault;
  inherit systemDefault;
}
