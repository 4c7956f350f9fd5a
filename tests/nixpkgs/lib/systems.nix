# lib.systems of the stand-in: `examples` and `elaborate`, enough for nixpkgs.hostPlatform /
# buildPlatform given as "aarch64-linux", "aarch64-unknown-linux-gnu" or an attrset with `system`
# or `config` (like lib.systems.examples.raspberryPi).
let
  # "armv6l-unknown-linux-gnueabihf" -> "armv6l-linux"; "aarch64-linux" stays.
  systemOfConfig = c:
    let
      parts = builtins.filter builtins.isString (builtins.split "-" c);
      cpu = builtins.head parts;
      kernel = if builtins.elem "darwin" parts then "darwin" else "linux";
    in
    "${cpu}-${kernel}";
  configOfSystem = s:
    let
      parts = builtins.filter builtins.isString (builtins.split "-" s);
      cpu = builtins.head parts;
    in
    if builtins.length parts > 2 then s
    else if builtins.match "armv[67]l" cpu != null then "${cpu}-unknown-linux-gnueabihf"
    else "${cpu}-unknown-linux-gnu";

  elaborate = p:
    let
      attrs = if builtins.isString p then { system = p; } else p;
      system =
        if attrs ? system then
          (if builtins.length (builtins.filter builtins.isString (builtins.split "-" attrs.system)) > 2
          then systemOfConfig attrs.system else attrs.system)
        else if attrs ? config then systemOfConfig attrs.config
        else throw "a platform needs `system` or `config`: ${builtins.toJSON (builtins.attrNames attrs)}";
      config = attrs.config or (configOfSystem system);
      cpu = builtins.head (builtins.filter builtins.isString (builtins.split "-" system));
      isAarch64 = cpu == "aarch64";
      isAarch32 = builtins.match "armv[5-7].*" cpu != null;
    in
    attrs // {
      inherit system config isAarch64 isAarch32;
      isAarch = isAarch64 || isAarch32;
      isx86_64 = cpu == "x86_64";
      isx86 = cpu == "x86_64" || builtins.match "i[3-6]86" cpu != null;
      isLinux = builtins.match ".*-linux" system != null;
      isDarwin = builtins.match ".*-darwin" system != null;
      parsed = { cpu.name = cpu; kernel.name = if builtins.match ".*-darwin" system != null then "darwin" else "linux"; };
      # Device trees come with the kernel on ARM boards (nixpkgs: linux-kernel.DTB).
      linux-kernel = { DTB = isAarch64 || isAarch32; } // (attrs.linux-kernel or { });
    };
in
{
  inherit elaborate;
  examples = {
    raspberryPi = { config = "armv6l-unknown-linux-gnueabihf"; };
    armv7l-hf-multiplatform = { config = "armv7l-unknown-linux-gnueabihf"; };
    aarch64-multiplatform = { config = "aarch64-unknown-linux-gnu"; };
    gnu64 = { config = "x86_64-unknown-linux-gnu"; };
  };
  # The platforms the stand-in knows (lib.systems.flakeExposed in nixpkgs).
  flakeExposed = [ "x86_64-linux" "aarch64-linux" "armv6l-linux" "armv7l-linux" ];
}
