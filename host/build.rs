//! Builds the built-in plugins (`plugins/*`) for `wasm32-wasip2` with a nested cargo (its own
//! target directory, so no lock is shared with this build) and generates the table that
//! embeds them in the binary. Needs the wasm target: `rustup target add wasm32-wasip2`.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let root = manifest.parent().unwrap().to_path_buf();
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap());
    for p in [
        "plugins",
        "sdk/src",
        "sdk/wit",
        "sdk/Cargo.toml",
        "Cargo.lock",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(p).display());
    }
    let mut names: Vec<String> = std::fs::read_dir(root.join("plugins"))
        .expect("plugins/ directory")
        .flatten()
        .filter(|e| e.path().join("Cargo.toml").exists())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|d| if d.is_absolute() { d } else { root.join(d) })
        .unwrap_or_else(|| root.join("target"))
        .join("wasm-plugins");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&root)
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "--target-dir",
        ])
        .arg(&target_dir);
    for n in &names {
        cmd.args(["-p", &format!("plugin-{n}")]);
    }
    for var in [
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "CARGO_BUILD_RUSTFLAGS",
        "RUSTC_WORKSPACE_WRAPPER",
    ] {
        cmd.env_remove(var);
    }
    // Small, fast modules: no debug info, one codegen unit, LTO, abort on panic.
    cmd.env("CARGO_PROFILE_RELEASE_DEBUG", "false")
        .env("CARGO_PROFILE_RELEASE_STRIP", "true")
        .env("CARGO_PROFILE_RELEASE_LTO", "true")
        .env("CARGO_PROFILE_RELEASE_CODEGEN_UNITS", "1")
        .env("CARGO_PROFILE_RELEASE_PANIC", "abort")
        .env("CARGO_PROFILE_RELEASE_OPT_LEVEL", "3");
    let status = cmd
        .status()
        .expect("running cargo for the built-in plugins");
    if !status.success() {
        panic!(
            "building the built-in plugins for wasm32-wasip2 failed ({status}). \
             Is the target installed? Run: rustup target add wasm32-wasip2"
        );
    }
    let dir = target_dir.join("wasm32-wasip2").join("release");
    let mut table = String::from(
        "/// Built-in plugins: (name, component bytes).\npub static BUILTINS: &[(&str, &[u8])] = &[\n",
    );
    for n in &names {
        let wasm = dir.join(format!("{}.wasm", n.replace('-', "_")));
        assert!(Path::new(&wasm).exists(), "missing {}", wasm.display());
        table.push_str(&format!(
            "    ({n:?}, include_bytes!({:?})),\n",
            wasm.display().to_string()
        ));
    }
    table.push_str("];\n");
    std::fs::write(out.join("builtins.rs"), table).unwrap();
}
