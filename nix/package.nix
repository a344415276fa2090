# The ferry package: built from the committed Cargo.lock, so every crate is
# pinned and no vendor hash needs updating when dependencies change.
# Name, version, description and licence are read from Cargo.toml, never copied.
{
  lib,
  rustPlatform,
  pkg-config,
  openssl,
}:

let
  manifest = (builtins.fromTOML (builtins.readFile ../Cargo.toml)).package;
in
rustPlatform.buildRustPackage {
  pname = manifest.name;
  inherit (manifest) version;

  # Only what cargo reads (tests/ for clippy's --all-targets and the test
  # fixtures): editing the README, CI scripts or nix/ must not rebuild ferry.
  # A new top-level file that cargo reads (a build.rs, an include_str!
  # target) has to be added here.
  src = lib.fileset.toSource {
    root = ../.;
    fileset = lib.fileset.unions [
      ../Cargo.toml
      ../Cargo.lock
      ../src
      # embedded in the binary: the default image's definition (include_bytes!)
      # and the example cluster files (include_str!)
      ../images/spark
      ../examples
      (lib.fileset.maybeMissing ../tests)
    ];
  };

  cargoLock.lockFile = ../Cargo.lock;

  # openssl-sys (reqwest's native-tls, later ssh2) finds OpenSSL with pkg-config.
  nativeBuildInputs = [ pkg-config ];
  buildInputs = [ openssl ];

  # Unit tests and plan snapshot tests live beside the code, in the binary
  # (and in the library, should one appear).
  # The integration and end-to-end tests under tests/ need root, daemons and
  # hosts, which the build sandbox does not have.
  cargoTestFlags = [ "--bins" ] ++ lib.optional (builtins.pathExists ../src/lib.rs) "--lib";

  meta = {
    inherit (manifest) description;
    license = lib.getLicenseFromSpdxId manifest.license;
    mainProgram = "ferry";
  };
}
