//! Links the guest with a 128 KiB stack instead of the default 1 MiB: a request then touches a
//! few hundred KiB of linear memory, which the host keeps resident between instances.

fn main() {
    if std::env::var("CARGO_CFG_TARGET_FAMILY").is_ok_and(|family| family == "wasm") {
        println!("cargo:rustc-link-arg-bins=-zstack-size=131072");
    }
}
