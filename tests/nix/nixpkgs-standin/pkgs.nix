# The package set of the stand-in: the builders ferry's nix files call and the
# tools they name. `extend` applies an overlay as real nixpkgs does.
{ lib, system }:

let
  inherit (builtins)
    attrNames
    concatStringsSep
    filter
    functionArgs
    intersectAttrs
    isAttrs
    isFunction
    mapAttrs
    removeAttrs
    ;

  # Throws when `args` has names outside `allowed`, naming the caller.
  onlyArgs =
    fn: allowed: args:
    let
      unknown = filter (name: !(builtins.elem name allowed)) (attrNames args);
    in
    if unknown == [ ] then
      args
    else
      throw "${fn} (nixpkgs stand-in): unexpected argument(s) ${concatStringsSep ", " unknown}";

  # Arguments the real stdenv.mkDerivation gives a meaning to. The real one
  # passes any other name on as a variable; the stand-in refuses it, to
  # catch typos.
  mkDerivationArgs = [
    "name"
    "pname"
    "version"
    "src"
    "nativeBuildInputs"
    "buildInputs"
    "propagatedBuildInputs"
    "nativeCheckInputs"
    "checkInputs"
    "buildPhase"
    "checkPhase"
    "installPhase"
    "preBuild"
    "postBuild"
    "preCheck"
    "postCheck"
    "preInstall"
    "postInstall"
    "postPatch"
    "patches"
    "doCheck"
    "doInstallCheck"
    "dontStrip"
    "strictDeps"
    "shellHook"
    "env"
    "meta"
    "passthru"
    # set by buildRustPackage, read by its hooks
    "cargoDeps"
    "cargoBuildFlags"
    "cargoTestFlags"
    "checkFlags"
  ];

  # Arguments of the real rustPlatform.buildRustPackage (nixpkgs 25.05) on
  # top of the mkDerivation ones. `cargoSha256` is gone there, so absent here.
  buildRustPackageArgs = mkDerivationArgs ++ [
    "cargoLock"
    "cargoHash"
    "cargoVendorDir"
    "cargoPatches"
    "useFetchCargoVendor"
    "buildType"
    "checkType"
    "buildFeatures"
    "checkFeatures"
    "buildNoDefaultFeatures"
    "checkNoDefaultFeatures"
    "buildAndTestSubdir"
    "useNextest"
    "auditable"
    "sourceRoot"
    "cargoRoot"
  ];

  # As lib.makeOverridable: a set result gains `override`.
  makeOverridable =
    f: origArgs:
    let
      result = f origArgs;
    in
    if isAttrs result then
      result
      // {
        override = newArgs: makeOverridable f (origArgs // newArgs);
        overrideDerivation = throw "overrideDerivation: not in the stand-in";
      }
    else
      result;

  # The generic builder (builder.sh): buildPhase, checkPhase if doCheck,
  # installPhase, in a copy of src, with the inputs' bin folders on PATH.
  # PATH is an attribute, so `nix develop` sees it too.
  mkDerivation =
    final: args:
    let
      inputs = (args.nativeBuildInputs or [ ]) ++ (args.buildInputs or [ ]);
      drv = derivation (
        removeAttrs args [
          "meta"
          "passthru"
          "env"
        ]
        // (args.env or { })
        // {
          name = args.name or "${args.pname}-${args.version}";
          inherit system;
          # as stdenv; `nix develop` reads it to know where to write
          outputs = [ "out" ];
          builder = "/bin/bash";
          args = [ ./builder.sh ];
          PATH = concatStringsSep ":" (map (p: "${p}/bin") inputs ++ [ "/usr/bin:/bin" ]);
          doCheck = args.doCheck or false;
        }
      );
    in
    drv
    // (args.passthru or { })
    // {
      meta = args.meta or { };
      overrideAttrs = f: final.stdenv.mkDerivation (args // (if isFunction f then f args else f));
    };

  base =
    final:
    let
      # A package whose one program prints its own name and arguments.
      tool =
        pname: version: program:
        mkDerivation final {
          inherit pname version;
          installPhase = ''
            mkdir -p $out/bin
            printf '#!/bin/sh\necho "${program} (nixpkgs stand-in) $*"\n' > $out/bin/${program}
            chmod +x $out/bin/${program}
          '';
          meta.mainProgram = program;
        };
    in
    {
      inherit lib;

      # As nixpkgs: fill a function's named arguments from the package set.
      callPackage =
        fn: args:
        let
          f = if isFunction fn then fn else import fn;
        in
        makeOverridable f (intersectAttrs (functionArgs f) final // args);

      # As nixpkgs: for a function returning a set of derivations; `override`
      # goes on each member, not on the set (where `nix flake check` objects).
      callPackages =
        fn: args:
        let
          f = if isFunction fn then fn else import fn;
          origArgs = intersectAttrs (functionArgs f) final // args;
        in
        mapAttrs (name: _: makeOverridable (a: (f a).${name}) origArgs) (f origArgs);

      stdenv.mkDerivation =
        attrs: mkDerivation final (onlyArgs "stdenv.mkDerivation" mkDerivationArgs attrs);

      rustPlatform.buildRustPackage =
        attrs:
        let
          args = onlyArgs "rustPlatform.buildRustPackage" buildRustPackageArgs attrs;
          cargoLock = onlyArgs "buildRustPackage's cargoLock" [
            "lockFile"
            "lockFileContents"
            "outputHashes"
            "allowBuiltinFetchGit"
          ] (args.cargoLock or { });
        in
        if !(args ? pname && args ? version && args ? src) then
          throw "rustPlatform.buildRustPackage (nixpkgs stand-in): pname, version and src are required"
        else if !(args ? cargoLock || args ? cargoHash || args ? cargoDeps || args ? cargoVendorDir) then
          throw "rustPlatform.buildRustPackage: cargoHash, cargoVendorDir, cargoDeps, or cargoLock must be set"
        else
          final.stdenv.mkDerivation (
            removeAttrs args [ "cargoLock" ]
            // {
              # stands for the vendored crates; copying proves the lock file is there
              cargoDeps = final.runCommand "${args.pname}-${args.version}-vendor" {
                inherit (cargoLock) lockFile;
              } ''mkdir $out && cp "$lockFile" $out/Cargo.lock'';
              nativeBuildInputs = (args.nativeBuildInputs or [ ]) ++ [
                final.cargo
                final.rustc
              ];
              doCheck = args.doCheck or true;
              buildPhase = args.buildPhase or "cargo build --release \${cargoBuildFlags:-}";
              checkPhase = args.checkPhase or "cargo test \${cargoTestFlags:-}";
              installPhase =
                args.installPhase or ''
                  mkdir -p $out/bin
                  printf '#!/bin/sh\necho "%s %s (nixpkgs stand-in build)"\n' "$pname" "$version" > $out/bin/$pname
                  chmod +x $out/bin/$pname
                '';
            }
          );

      # As nixpkgs: `packages` and the inputs of `inputsFrom` (minus those
      # derivations themselves) become the shell's inputs.
      mkShell =
        attrs:
        let
          args = onlyArgs "mkShell" [
            "name"
            "packages"
            "inputsFrom"
            "buildInputs"
            "nativeBuildInputs"
            "shellHook"
            "env"
          ] attrs;
          inputsFrom = args.inputsFrom or [ ];
          merge =
            name:
            (args.${name} or [ ])
            ++ lib.subtractLists inputsFrom (builtins.concatLists (builtins.catAttrs name inputsFrom));
        in
        final.stdenv.mkDerivation {
          name = args.name or "nix-shell";
          nativeBuildInputs = (args.packages or [ ]) ++ merge "nativeBuildInputs";
          buildInputs = merge "buildInputs";
          shellHook = args.shellHook or "";
          env = args.env or { };
          installPhase = "echo 'a nix-shell environment (stand-in)' > $out";
        };

      # The real one passes `env` on as variables, unchecked.
      runCommand =
        name: env: buildCommand:
        mkDerivation final (env // { inherit name buildCommand; });

      pkg-config = tool "pkg-config" "0.29.2" "pkg-config";
      openssl = tool "openssl" "3.4.1" "openssl";
      cargo = tool "cargo" "1.86.0" "cargo";
      rustc = tool "rustc" "1.86.0" "rustc";
      clippy = tool "clippy" "1.86.0" "cargo-clippy";
      rustfmt = tool "rustfmt" "1.86.0" "rustfmt";
      skopeo = tool "skopeo" "1.18.0" "skopeo";
      umoci = tool "umoci" "0.4.7" "umoci";
      docker-client = tool "docker" "27.5.1" "docker";
      openssh = tool "openssh" "10.0p2" "ssh";
      rclone = tool "rclone" "1.69.1" "rclone";
    };

  # As nixpkgs: overlays compose into one fixed point; `extend` adds one.
  makePkgs =
    overlays:
    lib.fix (
      builtins.foldl' (
        acc: overlay: final:
        let
          prev = acc final;
        in
        prev // overlay final prev
      ) base overlays
    )
    // {
      extend = overlay: makePkgs (overlays ++ [ overlay ]);
    };
in
makePkgs [ ]
