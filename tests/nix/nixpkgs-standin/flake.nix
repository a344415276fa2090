# A stand-in for nixpkgs, so ferry's flake can be evaluated, checked and built
# offline (tests/nix/check.sh passes it with `--override-input nixpkgs`).
# It offers only what ferry's nix files use, under the real names, and its
# functions reject arguments the real ones do not take. Its packages are tiny
# real derivations built with /bin/bash: they record names, versions and
# wiring, not software.
{
  description = "nixpkgs stand-in for testing ferry's flake offline";

  outputs =
    { self }:
    let
      lib = import ./lib.nix;
    in
    {
      inherit lib;

      legacyPackages = lib.genAttrs [
        "x86_64-linux"
        "aarch64-linux"
        "x86_64-darwin"
        "aarch64-darwin"
      ] (system: import ./pkgs.nix { inherit lib system; });
    };
}
