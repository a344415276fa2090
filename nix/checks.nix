# What `nix flake check` builds: the package (with its unit tests), clippy
# with warnings as errors, and rustfmt in check mode. A set of derivations,
# so flake.nix calls it with callPackages (callPackage would add `override`
# to the set, which `nix flake check` rejects).
{
  ferry,
  runCommand,
  cargo,
  clippy,
  rustfmt,
}:

{
  build = ferry;

  # Reuses the package's vendored dependencies, so it runs offline in the sandbox.
  clippy = ferry.overrideAttrs (old: {
    pname = "${old.pname}-clippy";
    nativeBuildInputs = old.nativeBuildInputs ++ [ clippy ];
    buildPhase = ''
      runHook preBuild
      cargo clippy --offline --all-targets -- --deny warnings
      runHook postBuild
    '';
    doCheck = false;
    installPhase = ''
      touch $out
    '';
  });

  fmt =
    runCommand "${ferry.pname}-fmt"
      {
        nativeBuildInputs = [
          cargo
          rustfmt
        ];
      }
      ''
        cd ${ferry.src}
        cargo fmt --check
        touch $out
      '';
}
