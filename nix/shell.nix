# The development shell: ferry's own build inputs (pkg-config, OpenSSL),
# the Rust toolchain, and the tools its integration and end-to-end tests drive.
{
  mkShell,
  ferry,
  cargo,
  rustc,
  clippy,
  rustfmt,
  skopeo,
  umoci,
  docker-client,
  openssh,
  rclone,
}:

mkShell {
  inputsFrom = [ ferry ];

  packages = [
    # listed, not left to inputsFrom: whether the package's cargo reaches the
    # shell depends on nixpkgs' internals (its hooks used to propagate it)
    cargo
    rustc
    clippy
    rustfmt
    # tests compare ferry's images with what these tools read and write
    skopeo
    umoci
    docker-client
    # pushing and launching go over SSH and to object storage
    openssh
    rclone
  ];
}
