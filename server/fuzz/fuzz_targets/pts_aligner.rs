//! PtsAligner on arbitrary POC/capture-time sequences: DTS strictly
//! increases, PTS never falls below DTS, nothing panics or overflows.
#![no_main]

use libfuzzer_sys::fuzz_target;
use liveslice_server::engine::timing::{FrameRate, PtsAligner, TimingInput, TimingOptions};

fuzz_target!(|data: &[u8]| {
    if data.len() < 4 {
        return;
    }
    let num = u32::from(data[0]).max(1) * 1000;
    let den = 1000 + u32::from(data[1]) * 4;
    let reorder = u32::from(data[2] % 5);
    let mut a = PtsAligner::new(FrameRate::new(num, den), reorder, TimingOptions::default());
    let mut last_dts = None;
    for (i, c) in data[3..].chunks(11).enumerate() {
        if c.len() < 11 {
            break;
        }
        let poc = i64::from(i16::from_le_bytes([c[0], c[1]]));
        let flags = c[2];
        let capture = u64::from_le_bytes([c[3], c[4], c[5], c[6], c[7], c[8], c[9], c[10]]);
        if flags & 8 != 0 {
            a.note_dropped(u32::from(flags >> 4));
        }
        let t = a.next(TimingInput {
            poc,
            poc_resets: i == 0 || flags & 1 != 0,
            order_by_poc: flags & 2 == 0,
            capture_ns: (flags & 4 != 0).then_some(capture),
        });
        assert!(t.pts >= t.dts, "pts {} < dts {}", t.pts, t.dts);
        if let Some(l) = last_dts {
            assert!(t.dts > l, "dts {} after {}", t.dts, l);
        }
        last_dts = Some(t.dts);
    }
});
