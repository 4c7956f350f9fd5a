# The package set of the stand-in: `import <this dir> { system; }` like real nixpkgs.
# See README.md.
{ system ? builtins.currentSystem
, crossSystem ? null
, versions ? { }
, bench ? { }
, ...
}:
import ./pkgs { inherit system crossSystem versions bench; }
