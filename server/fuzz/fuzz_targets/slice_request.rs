//! Protobuf decoding of SliceRequest and the checks the service applies to
//! a first message: never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use liveslice_proto::v1::SliceRequest;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    if let Ok(req) = SliceRequest::decode(data) {
        let _ = liveslice_server::ids::validate_session_id(&req.session_id);
        let _ = req.encode_to_vec();
    }
});
