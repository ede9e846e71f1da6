//! Annex B splitter + access-unit assembler on arbitrary bytes in arbitrary
//! chunks: never panics, memory stays within the limits, and the output
//! does not depend on the chunking.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use liveslice_server::engine::access_unit::{AccessUnitAssembler, AssemblerLimits};
use liveslice_server::engine::annexb::{AnnexBSplitter, Split};

fn run(data: &[u8], sizes: &[u8]) -> Vec<(Vec<u8>, u32, bool)> {
    let limits = AssemblerLimits {
        max_au_bytes: 1 << 16,
        max_au_nals: 64,
    };
    let mut s = AnnexBSplitter::new(1 << 15);
    let mut a = AccessUnitAssembler::new(limits);
    let (mut splits, mut aus, mut notes) = (Vec::new(), Vec::new(), Vec::new());
    let mut pos = 0;
    let mut i = 0;
    while pos < data.len() {
        let n = if sizes.is_empty() {
            data.len()
        } else {
            sizes[i % sizes.len()] as usize + 1
        };
        let end = (pos + n).min(data.len());
        s.push(Bytes::copy_from_slice(&data[pos..end]), &mut splits);
        assert!(s.buffered() <= 1 << 15);
        for sp in splits.drain(..) {
            if let Split::Nal(n) = sp {
                a.push(n, &mut aus, &mut notes);
                assert!(a.buffered() <= (1 << 16) + (1 << 15));
            }
        }
        pos = end;
        i += 1;
    }
    s.finish(&mut splits);
    for sp in splits.drain(..) {
        if let Split::Nal(n) = sp {
            a.push(n, &mut aus, &mut notes);
        }
    }
    a.flush(&mut aus, true, false);
    aus.iter()
        .map(|au| {
            let (bytes, spans) = au.annexb(&[]);
            assert_eq!(spans.len(), au.nals.len());
            for sp in &spans {
                assert!(sp.end as usize <= bytes.len() && sp.start <= sp.end);
            }
            (bytes.to_vec(), au.slices, au.problem.is_some())
        })
        .collect()
}

fuzz_target!(|input: &[u8]| {
    let Some((&k, rest)) = input.split_first() else {
        return;
    };
    let (sizes, data) = rest.split_at((k as usize % 8).min(rest.len()));
    let whole = run(data, &[]);
    let chunked = run(data, sizes);
    assert_eq!(whole, chunked, "chunking changed the output");
});
