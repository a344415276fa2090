{
  description = "ferry: build reproducible OCI images for Spark clusters, ship them to hosts, and launch them";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-25.05";

  # Wiring only: the package, the dev shell and the checks live in nix/.
  outputs =
    { self, nixpkgs }:
    let
      # ferry drives Docker, SSH and Linux hosts; other systems are untested.
      systems = [
        "x86_64-linux"
        "aarch64-linux"
      ];
      forAllSystems = f: nixpkgs.lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system} system);
    in
    {
      overlays.default = final: prev: {
        ferry = final.callPackage ./nix/package.nix { };
      };

      packages = forAllSystems (
        pkgs: system: {
          default = self.packages.${system}.ferry;
          ferry = pkgs.callPackage ./nix/package.nix { };
        }
      );

      apps = forAllSystems (
        pkgs: system:
        let
          inherit (self.packages.${system}) ferry;
        in
        {
          default = {
            type = "app";
            program = nixpkgs.lib.getExe ferry;
            meta.description = ferry.meta.description;
          };
        }
      );

      devShells = forAllSystems (
        pkgs: system: {
          default = pkgs.callPackage ./nix/shell.nix { inherit (self.packages.${system}) ferry; };
        }
      );

      checks = forAllSystems (
        pkgs: system: pkgs.callPackages ./nix/checks.nix { inherit (self.packages.${system}) ferry; }
      );
    };
}
