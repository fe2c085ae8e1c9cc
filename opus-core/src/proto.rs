//! The generated `opus.v1` API. Client and server share these types; `wire` converts them to and
//! from the domain types so that the rest of the code never handles prost messages.

#![allow(missing_docs, clippy::all)]

tonic::include_proto!("opus.v1");

/// The encoded file descriptor set of the API, served by gRPC reflection so grpcurl works.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("opus_descriptor");
