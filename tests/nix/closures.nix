# Small closures for tests/nix_closure.rs, built without nixpkgs: every
# derivation runs the host's /bin/sh. The programs inside run on a static
# busybox copied into the store (Nix does not track the host's glibc, so
# nothing dynamic may run in the image).
#
#   chain:   app -> lib -> base -> busybox
#   diamond: top -> left, right; left, right -> bottom -> busybox
#
# `tag` changes every output path, for tests that need a new build.
{ busybox, tag ? "1" }:
let
  drv = name: script: builtins.derivation {
    inherit name tag;
    system = builtins.currentSystem;
    builder = "/bin/sh";
    args = [ "-c" script ];
    PATH = "/usr/bin:/bin";
  };
  # busybox picks its applet from the name it is called by: `sh`
  withShell = ''
    mkdir -p $out/bin
    ln -s ${busybox} $out/bin/sh
  '';
in
rec {
  base = drv "base-1.0" ''
    ${withShell}
    mkdir -p $out/share
    echo "base data" > $out/share/base.txt
  '';
  lib = drv "lib-1.0" ''
    mkdir -p $out/lib
    echo "lib uses ${base}" > $out/lib/lib.txt
  '';
  app = drv "app-1.0" ''
    mkdir -p $out/bin
    printf '#!${base}/bin/sh\necho "hello from the chain"\necho "${lib}" > /dev/null\n' > $out/bin/app
    chmod 0755 $out/bin/app
  '';
  bottom = drv "bottom-1.0" withShell;
  left = drv "left-1.0" "mkdir -p $out; echo left ${bottom} > $out/left";
  right = drv "right-1.0" "mkdir -p $out; echo right ${bottom} > $out/right";
  top = drv "top-1.0" ''
    mkdir -p $out/bin
    printf '#!${bottom}/bin/sh\necho "hello from the diamond"\necho "${left} ${right}" > /dev/null\n' > $out/bin/top
    chmod 0755 $out/bin/top
  '';
}
