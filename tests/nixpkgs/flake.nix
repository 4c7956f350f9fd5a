# The stand-in as a flake input, like nixpkgs' flake.nix: `lib.nixosSystem { system; modules;
# specialArgs; }` (see README.md) and `legacyPackages.<system>`.
{
  description = "nixpkgs stand-in for fleet's tests";

  outputs = { self }:
    let
      lib = import ./lib;
      systems = [ "x86_64-linux" "aarch64-linux" "armv7l-linux" "armv6l-linux" "i686-linux" "riscv64-linux" ];
      # Like nixpkgs' lib.nixosSystem: eval-config.nix with the modules; `system` (legacy) only
      # a default of `nixpkgs.system`, as nixos/default.nix's argument is.
      nixosSystem = { system ? null, modules, specialArgs ? { }, ... }:
        let
          systemDefault =
            if system == null then [ ]
            else [ { module = { lib, ... }: { nixpkgs.system = lib.mkDefault system; }; file = "${self}/flake.nix"; } ];
          asModule = m: {
            module = m;
            file = if builtins.isPath m || builtins.isString m then toString m else "<unknown-file>";
          };
        in
        import ./nixos/lib/eval-config.nix {
          modules = map asModule modules ++ systemDefault;
          inherit systemDefault specialArgs;
        };
    in
    {
      lib = lib // { inherit nixosSystem; };
      legacyPackages = builtins.listToAttrs (map (system: { name = system; value = import ./. { inherit system; }; }) systems);
    };
}
