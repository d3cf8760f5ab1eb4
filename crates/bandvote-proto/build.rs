//! Generates the tonic client and server for `proto/vote.proto`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/vote.proto");
    tonic_prost_build::configure().compile_protos(&["proto/vote.proto"], &["proto"])?;
    Ok(())
}
