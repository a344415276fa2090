# The development shell: ferry's own build inputs (cargo, rustc, pkg-config,
# OpenSSL, through inputsFrom) plus the linters and the tools its integration
# and end-to-end tests drive.
{
  mkShell,
  ferry,
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
