# Sourced by the bench scripts once they have set $root: builds the gateway with the cargo
# profile SY_PROFILE (release by default; `dist` is the production build, whole-program LTO,
# see Cargo.toml) and exports SWITCHYARD_BIN, the binary the candidate scripts run. A
# SWITCHYARD_BIN the caller set is run as it is, and nothing is built. Sets $build to the
# build's name for results: SY_BUILD, else the profile, else `custom` for a given binary.
if [ -n "${SWITCHYARD_BIN:-}" ]; then
  build=${SY_BUILD:-custom}
else
  profile=${SY_PROFILE:-release}
  build=${SY_BUILD:-$profile}
  cargo build --profile "$profile" -p switchyard --manifest-path "$root/Cargo.toml"
  export SWITCHYARD_BIN="$root/target/$profile/switchyard"
fi
