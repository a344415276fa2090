# The parts of nixpkgs' `lib` that ferry's nix files use, with the same
# behaviour on the inputs they get. Anything else is missing on purpose, so
# using a new function fails here first and gets a deliberate stand-in.
let
  inherit (builtins)
    attrNames
    concatMap
    elem
    filter
    isList
    isPath
    listToAttrs
    pathExists
    stringLength
    substring
    ;

  hasPrefix = prefix: s: substring 0 (stringLength prefix) s == prefix;

  # A file set is represented as a list of paths; the real one is opaque.
  toFileList =
    x:
    if isList x then
      x
    else if isPath x then
      if pathExists x then [ x ] else throw "lib.fileset: path ${toString x} does not exist"
    else
      throw "lib.fileset: expected a path or a file set";

  licenses = {
    asl20 = {
      spdxId = "Apache-2.0";
      shortName = "asl20";
      free = true;
    };
  };
in
{
  inherit licenses;

  fix =
    f:
    let
      x = f x;
    in
    x;

  genAttrs =
    names: f:
    listToAttrs (
      map (name: {
        inherit name;
        value = f name;
      }) names
    );

  optional = cond: x: if cond then [ x ] else [ ];

  subtractLists = e: filter (x: !(elem x e));

  # Real: warns and returns a bare licence for an unknown id; here unknown ids
  # fail, so a licence change in Cargo.toml is noticed.
  getLicenseFromSpdxId =
    id:
    let
      found = filter (name: licenses.${name}.spdxId == id) (attrNames licenses);
    in
    if found == [ ] then
      throw "lib.getLicenseFromSpdxId (stand-in): unknown SPDX id `${id}`"
    else
      licenses.${builtins.head found};

  # Real: falls back to the package name with a warning; here mainProgram is required.
  getExe =
    drv:
    if drv ? meta.mainProgram then
      "${drv}/bin/${drv.meta.mainProgram}"
    else
      throw "lib.getExe (stand-in): ${drv.name} has no meta.mainProgram";

  fileset = {
    unions = sets: concatMap toFileList sets;
    maybeMissing = path: if pathExists path then [ path ] else [ ];
    toSource =
      { root, fileset }:
      let
        files = toFileList fileset;
        rootStr = toString root;
        # keep a path if it is a member, inside one, or a folder leading to one
        keep =
          path: _type:
          builtins.any (
            member:
            let
              m = toString member;
            in
            path == m || hasPrefix (m + "/") path || hasPrefix (path + "/") m
          ) files;
      in
      if builtins.any (member: !(hasPrefix (rootStr + "/") (toString member))) files then
        throw "lib.fileset.toSource: every file must be under root ${rootStr}"
      else
        builtins.path {
          path = root;
          name = "source";
          filter = keep;
        };
  };
}
