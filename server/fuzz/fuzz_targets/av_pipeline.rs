//! A session with audio: video and AAC bytes interleaved (arbitrary ADTS,
//! or raw frames with an arbitrary AudioSpecificConfig, with or without
//! capture times), and the invariants checked on what comes out (see
//! `engine::pipeline::check_av_input`, which the regression test over
//! `testdata/fuzz/av_pipeline/` runs too).
#![no_main]

use libfuzzer_sys::fuzz_target;
use liveslice_server::engine::pipeline::check_av_input;

fuzz_target!(|input: &[u8]| {
    if let Err(e) = check_av_input(input) {
        panic!("{e}");
    }
});
