//! Compiles `proto/` into the `hookyard` API crate with protox (a pure-Rust
//! protobuf compiler, so no `protoc` is needed) and tonic's code generator.

use std::{env, path::PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "proto/hookyard/v1/events.proto",
        "proto/hookyard/v1/admin.proto",
        "proto/hookyard/v1/sources.proto",
        "proto/hookyard/v1/flows.proto",
        "proto/hookyard/v1/event_types.proto",
    ];
    for proto in &protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    let descriptors = protox::compile(protos, ["proto"])?;
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("hookyard_descriptor.bin"),
        prost::Message::encode_to_vec(&descriptors),
    )?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(descriptors)?;
    Ok(())
}
