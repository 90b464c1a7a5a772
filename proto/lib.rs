//! Hookyard's API: the `hookyard.v1` gRPC contract, generated from `proto/` by
//! `build.rs`. The server and the TUI both depend on this crate, so the wire
//! types live in exactly one place.

/// `hookyard.v1`: the Events (intake) and Admin services and their messages.
pub mod v1 {
    tonic::include_proto!("hookyard.v1");
}

/// The encoded `FileDescriptorSet` of every proto file, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/hookyard_descriptor.bin"));
