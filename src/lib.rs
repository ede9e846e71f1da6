//! The liveslice gRPC API (`proto/liveslice/v1/slicer.proto`): generated message
//! types, the `SliceService` client and server, and the encoded file descriptor
//! set for reflection.

/// Package `liveslice.v1`.
pub mod v1 {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("liveslice.v1");
}

/// The encoded `FileDescriptorSet` of `proto/`, for `tonic-reflection`.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/liveslice_descriptor.bin"));
