# A closure of `n` toy paths: path i references i-1 and i/2. Each holds a directory with a
# text file, an executable, a symlink to each reference and `kb` KiB of random data.
{ n ? 3, tag ? "small", kb ? 1 }:
let
  mk = i: derivation {
    name = "fleet-store-test-${tag}-${toString i}-1.0";
    system = builtins.currentSystem;
    builder = "/bin/sh";
    PATH = "/usr/bin:/bin";
    deps = if i == 0 then [ ] else [ (builtins.elemAt pkgs (i - 1)) (builtins.elemAt pkgs (i / 2)) ];
    args = [ "-c" ''
      mkdir -p $out/bin $out/empty
      echo "path ${toString i}" > $out/readme
      printf '#!/bin/sh\necho hi\n' > $out/bin/hello; chmod +x $out/bin/hello
      head -c ${toString (kb * 1024)} /dev/urandom > $out/data
      k=0; for d in $deps; do ln -s $d $out/dep-$k; k=$((k+1)); done
    '' ];
  };
  pkgs = builtins.genList mk n;
in builtins.elemAt pkgs (n - 1)
