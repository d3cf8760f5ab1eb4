//! Builds the WebAssembly guest (`crates/bandvote-guest`, target `wasm32-wasip2`) so that the host
//! can embed it: one `cargo build` of the workspace builds everything. The guest is built by a
//! nested cargo into `target/guest`, beside (not instead of) the workspace's target directory, and
//! the `wasm32-wasip2` target is added through rustup when it is missing.
//!
//! `BANDVOTE_GUEST_WASM=/path/to/guest.wasm` skips the nested build and embeds that file instead.

use std::{
    env,
    path::{Path, PathBuf},
    process::Command,
};

const TARGET: &str = "wasm32-wasip2";

fn main() {
    println!("cargo:rerun-if-env-changed=BANDVOTE_GUEST_WASM");
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR")).join("bandvote-guest.wasm");
    if let Some(prebuilt) = env::var_os("BANDVOTE_GUEST_WASM") {
        std::fs::copy(&prebuilt, &out).expect("BANDVOTE_GUEST_WASM names a readable file");
        println!("cargo:rustc-env=BANDVOTE_EMBEDDED_GUEST={}", out.display());
        return;
    }
    let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let workspace = manifest.join("../..").canonicalize().expect("workspace root");
    for watched in
        ["crates/bandvote-guest/src", "crates/bandvote-guest/Cargo.toml", "crates/bandvote-core/src", "Cargo.lock"]
    {
        println!("cargo:rerun-if-changed={}", workspace.join(watched).display());
    }
    ensure_target();
    let target_dir = workspace.join("target/guest");
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(&workspace)
        .args(["build", "--release", "--locked", "-p", "bandvote-guest", "--target", TARGET, "--target-dir"])
        .arg(&target_dir)
        // The outer build's flags and wrappers are for the host, not for wasm.
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .env_remove("CARGO_TARGET_DIR")
        .env("CARGO_PROFILE_RELEASE_DEBUG", "false")
        .env("CARGO_PROFILE_RELEASE_STRIP", "true")
        .env("CARGO_PROFILE_RELEASE_LTO", "true")
        .env("CARGO_PROFILE_RELEASE_OPT_LEVEL", "s")
        .status()
        .expect("failed to run cargo to build the wasm guest");
    assert!(status.success(), "building the wasm guest (crates/bandvote-guest) failed");
    let built = target_dir.join(TARGET).join("release/bandvote-guest.wasm");
    copy(&built, &out);
    println!("cargo:rustc-env=BANDVOTE_EMBEDDED_GUEST={}", out.display());
}

/// Adds the wasm32-wasip2 target through rustup if it is not installed.
fn ensure_target() {
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).lines().any(|l| l.trim() == TARGET));
    match installed {
        Ok(true) => {}
        Ok(false) => {
            let status = Command::new("rustup").args(["target", "add", TARGET]).status();
            assert!(status.is_ok_and(|s| s.success()), "`rustup target add {TARGET}` failed");
        }
        // No rustup: the toolchain may still have the target; the build below says if not.
        Err(_) => {}
    }
}

fn copy(from: &Path, to: &Path) {
    std::fs::copy(from, to).unwrap_or_else(|e| panic!("failed to copy {} to {}: {e}", from.display(), to.display()));
}
