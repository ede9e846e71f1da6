//! The service's first-message checks (`grpc::first_message`: session id,
//! `target_fps`, role inference) and a publisher's options
//! (`grpc::publish_pipeline`) on arbitrary protobuf bytes: never a panic,
//! and what passes is in range.
#![no_main]

use libfuzzer_sys::fuzz_target;
use liveslice_proto::v1 as pb;
use liveslice_server::engine::PipelineOptions;
use liveslice_server::grpc::{first_message, publish_pipeline, MAX_TARGET_FPS};
use liveslice_server::ids::validate_session_id;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    let Ok(req) = pb::SliceRequest::decode(data) else {
        return;
    };
    let Ok(first) = first_message(&req) else {
        return;
    };
    assert!(validate_session_id(&first.session_id).is_ok());
    assert!(first
        .fps
        .is_none_or(|f| (1..=MAX_TARGET_FPS as u32).contains(&f)));
    assert_eq!(first.fps.is_none(), req.target_fps == 0);
    match pb::Role::try_from(req.role) {
        Ok(pb::Role::Publish) => assert!(first.publish),
        Ok(pb::Role::Subscribe) => assert!(!first.publish),
        _ => assert_eq!(
            first.publish,
            !req.data.is_empty() || req.publish.is_some() || req.end_of_stream
        ),
    }
    let base = PipelineOptions::default();
    let p = req.publish.unwrap_or_default();
    if let Ok(opts) = publish_pipeline(&base, &p, first.fps) {
        assert!((100..=60_000).contains(&opts.segment_target_ms));
        assert!((1..=1000).contains(&opts.window));
        if p.segment_duration_ms == 0 {
            assert_eq!(opts.segment_target_ms, base.segment_target_ms);
        }
        assert_eq!(opts.target_rate.is_some(), first.fps.is_some());
    } else {
        assert!(
            !(p.segment_duration_ms == 0 || (100..=60_000).contains(&p.segment_duration_ms))
                || !(p.window_segments == 0 || (1..=1000).contains(&p.window_segments))
        );
    }
});
