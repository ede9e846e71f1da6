//! Splits an H.264 Annex B byte stream into NAL units, whatever the chunking.
//!
//! Hand-written rather than `h264_reader::annexb::AnnexBReader` because that
//! reader hands out borrowed fragments through callbacks, so keeping a NAL unit
//! meant copying it. Here a NAL unit that lies inside one received chunk is a
//! zero-copy `Bytes` slice of it (the common case: publishers send whole access
//! units), and only a NAL unit split across chunks is copied, once, into an
//! owned buffer. Emulation-prevention bytes stay in place: h264-reader's RBSP
//! reader removes them when headers are parsed, and output keeps the original
//! bytes.
//!
//! Output is identical for any chunking (a property test holds this): start
//! codes may straddle chunks, zero bytes in front of a start code
//! (`zero_byte`, `trailing_zero_8bits`) never belong to a NAL unit, and bytes
//! before the first start code are reported as garbage.

use bytes::{Bytes, BytesMut};

use crate::frame::NalSpan;

/// A NAL unit as it arrived: header byte first, no start code.
#[derive(Clone, Debug)]
pub struct NalUnit {
    /// The NAL unit bytes (never empty).
    pub data: Bytes,
    /// Byte offset of the header byte in the publisher's stream.
    pub offset: u64,
    /// Length of its start code as sent: 4 (`00 00 00 01`, or longer runs of
    /// zeros, whose extra zeros are `trailing_zero_8bits` and dropped) or 3.
    pub prefix_len: u8,
    /// Where it lies in a received chunk, when it lies inside one.
    pub origin: Option<ChunkOrigin>,
}

/// Lets the access-unit assembler slice a whole access unit out of the chunk
/// it arrived in instead of copying it together.
#[derive(Clone, Debug)]
pub struct ChunkOrigin {
    /// The whole received chunk.
    pub chunk: Bytes,
    /// Sequence number of the chunk in the stream.
    pub chunk_seq: u64,
    /// Index of the header byte in the chunk.
    pub start: usize,
    /// End of the NAL unit in the chunk.
    pub end: usize,
    /// Whether the whole start code (`prefix_len` bytes) lies in the chunk
    /// right before `start`.
    pub prefix_in_chunk: bool,
}

impl NalUnit {
    pub fn header(&self) -> u8 {
        self.data.first().copied().unwrap_or(0)
    }
    pub fn nal_type(&self) -> u8 {
        self.header() & 0x1f
    }
    pub fn nal_ref_idc(&self) -> u8 {
        (self.header() >> 5) & 0x3
    }
    pub fn forbidden_bit(&self) -> bool {
        self.header() & 0x80 != 0
    }
}

/// What the splitter found besides NAL units.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SplitIssue {
    /// Bytes that are not part of any NAL unit (before the first start code).
    Garbage { offset: u64, len: u64 },
    /// A NAL unit longer than the limit; it was discarded.
    TooLarge { offset: u64, limit: usize },
}

/// One output of [`AnnexBSplitter`].
#[derive(Clone, Debug)]
pub enum Split {
    Nal(NalUnit),
    Issue(SplitIssue),
}

/// The NAL unit being read when a chunk ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Open {
    /// No start code seen yet: bytes are garbage.
    Garbage,
    /// Inside a NAL unit whose bytes so far are in `carry`.
    Carry,
    /// Inside a NAL unit that outgrew the limit: discard to the next start code.
    Oversized,
}

/// Push parser for Annex B: feed chunks, get NAL units.
#[derive(Debug)]
pub struct AnnexBSplitter {
    max_nal_bytes: usize,
    open: Open,
    /// Bytes of the open NAL unit (from its header byte). Trailing zeros are
    /// kept: they turn out to be either data or the next start code's prefix.
    carry: BytesMut,
    /// Stream offset of the open NAL unit's header byte.
    open_offset: u64,
    open_prefix_len: u8,
    open_prefix_in_chunk: bool,
    /// Stream offset of the next byte to arrive.
    offset: u64,
    chunk_seq: u64,
    /// Consecutive zero bytes at the end of everything pushed (capped at 3):
    /// recognises a start code that straddles chunks.
    zero_run: usize,
    /// Garbage seen and not yet reported: (offset, len).
    garbage: Option<(u64, u64)>,
}

/// Index of the first `00 00 01` in `hay`.
#[inline]
fn find_start_code(hay: &[u8]) -> Option<usize> {
    let mut from = 0;
    while from + 3 <= hay.len() {
        // memchr for the 0x01 is fast: it is rare in compressed data.
        let rel = memchr::memchr(1, &hay[from + 2..])?;
        let one = from + 2 + rel;
        if hay[one - 1] == 0 && hay[one - 2] == 0 {
            return Some(one - 2);
        }
        from = one - 1;
    }
    None
}

impl AnnexBSplitter {
    pub fn new(max_nal_bytes: usize) -> Self {
        Self {
            max_nal_bytes: max_nal_bytes.max(16),
            open: Open::Garbage,
            carry: BytesMut::new(),
            open_offset: 0,
            open_prefix_len: 4,
            open_prefix_in_chunk: false,
            offset: 0,
            chunk_seq: 0,
            zero_run: 0,
            garbage: None,
        }
    }

    /// Total bytes pushed so far.
    pub fn stream_offset(&self) -> u64 {
        self.offset
    }

    /// Bytes held for an unterminated NAL unit.
    pub fn buffered(&self) -> usize {
        self.carry.len()
    }

    /// Splits `chunk`, appending complete NAL units (and issues) to `out`. The
    /// NAL unit still open at the end of the chunk is held until the next start
    /// code or [`finish`](Self::finish).
    pub fn push(&mut self, chunk: Bytes, out: &mut Vec<Split>) {
        if chunk.is_empty() {
            return;
        }
        let seq = self.chunk_seq;
        self.chunk_seq += 1;
        let base = self.offset;
        let len = chunk.len();

        // Start index of the open NAL unit, if it started in this chunk.
        let mut in_chunk: Option<usize> = None;
        // First index not yet given to a NAL unit or garbage.
        let mut pos = 0usize;

        // A start code whose zeros ended the previous chunk.
        let straddle_one = if self.zero_run >= 2 && chunk[0] == 1 {
            Some(0)
        } else if self.zero_run >= 1 && len >= 2 && chunk[0] == 0 && chunk[1] == 1 {
            Some(1)
        } else {
            None
        };
        if let Some(one) = straddle_one {
            self.close_carried(&chunk[..0], base, out);
            self.start_nal(&chunk, one, base);
            in_chunk = Some(one + 1);
            pos = one + 1;
        }

        let mut search = pos;
        while let Some(rel) = find_start_code(&chunk[search..]) {
            let sc = search + rel;
            let mut end = sc;
            // Zeros in front of a start code belong to no NAL unit.
            while end > pos && chunk[end - 1] == 0 {
                end -= 1;
            }
            match in_chunk {
                Some(start) => self.emit_in_chunk(&chunk, seq, base, start, end, out),
                None => self.close_carried(&chunk[pos..end], base + pos as u64, out),
            }
            self.start_nal(&chunk, sc + 2, base);
            in_chunk = Some(sc + 3);
            pos = sc + 3;
            search = sc + 3;
        }

        // The rest of the chunk belongs to the open NAL unit (or garbage).
        match in_chunk {
            Some(start) => {
                self.carry.clear();
                let rest = &chunk[start..];
                if rest.len() > self.max_nal_bytes {
                    self.oversized(out);
                } else {
                    self.carry.extend_from_slice(rest);
                    self.open = Open::Carry;
                }
            }
            None => self.extend_open(&chunk[pos..], base + pos as u64, out),
        }

        let tail_zeros = chunk.iter().rev().take(3).take_while(|&&b| b == 0).count();
        self.zero_run = if tail_zeros == len {
            (self.zero_run + len).min(3)
        } else {
            tail_zeros
        };
        self.offset += len as u64;
        self.report_garbage(out);
    }

    /// A start code's `01` is at `one` in `chunk`: the NAL unit starts after
    /// it. Records how long its start code was and whether all of it is in
    /// the chunk.
    fn start_nal(&mut self, chunk: &[u8], one: usize, base: u64) {
        let in_chunk_zeros = chunk[..one].iter().rev().take_while(|&&b| b == 0).count();
        let zeros = if in_chunk_zeros == one {
            in_chunk_zeros + self.zero_run
        } else {
            in_chunk_zeros
        };
        self.open_prefix_len = if zeros >= 3 { 4 } else { 3 };
        self.open_prefix_in_chunk = in_chunk_zeros + 1 >= self.open_prefix_len as usize;
        self.open = Open::Carry;
        self.open_offset = base + one as u64 + 1;
    }

    /// Ends the open NAL unit (end of stream, or the publisher marked the end
    /// of an access unit). What follows must start with a start code.
    pub fn finish(&mut self, out: &mut Vec<Split>) {
        self.close_carried(&[], self.offset, out);
        self.open = Open::Garbage;
        self.zero_run = 0;
        self.report_garbage(out);
    }

    /// Appends bytes to the open NAL unit that started in an earlier chunk.
    fn extend_open(&mut self, bytes: &[u8], offset: u64, out: &mut Vec<Split>) {
        match self.open {
            Open::Garbage => self.add_garbage(bytes, offset),
            Open::Carry => {
                if self.carry.len() + bytes.len() > self.max_nal_bytes {
                    self.oversized(out);
                } else {
                    self.carry.extend_from_slice(bytes);
                }
            }
            Open::Oversized => {}
        }
    }

    /// Closes the NAL unit that started in an earlier chunk, with `tail` as
    /// its last bytes.
    fn close_carried(&mut self, tail: &[u8], tail_offset: u64, out: &mut Vec<Split>) {
        match self.open {
            Open::Garbage => self.add_garbage(tail, tail_offset),
            Open::Carry => {
                if self.carry.len() + tail.len() > self.max_nal_bytes {
                    self.oversized(out);
                } else {
                    self.carry.extend_from_slice(tail);
                    let mut end = self.carry.len();
                    while end > 0 && self.carry[end - 1] == 0 {
                        end -= 1;
                    }
                    self.carry.truncate(end);
                    if !self.carry.is_empty() {
                        let data = self.carry.split().freeze();
                        out.push(Split::Nal(NalUnit {
                            data,
                            offset: self.open_offset,
                            prefix_len: self.open_prefix_len,
                            origin: None,
                        }));
                    }
                }
            }
            Open::Oversized => {}
        }
        self.carry.clear();
    }

    fn emit_in_chunk(
        &mut self,
        chunk: &Bytes,
        seq: u64,
        base: u64,
        start: usize,
        end: usize,
        out: &mut Vec<Split>,
    ) {
        if end <= start {
            return; // two start codes in a row
        }
        if end - start > self.max_nal_bytes {
            out.push(Split::Issue(SplitIssue::TooLarge {
                offset: base + start as u64,
                limit: self.max_nal_bytes,
            }));
            return;
        }
        out.push(Split::Nal(NalUnit {
            data: chunk.slice(start..end),
            offset: base + start as u64,
            prefix_len: self.open_prefix_len,
            origin: Some(ChunkOrigin {
                chunk: chunk.clone(),
                chunk_seq: seq,
                start,
                end,
                prefix_in_chunk: self.open_prefix_in_chunk,
            }),
        }));
    }

    fn oversized(&mut self, out: &mut Vec<Split>) {
        if self.open != Open::Oversized {
            out.push(Split::Issue(SplitIssue::TooLarge {
                offset: self.open_offset,
                limit: self.max_nal_bytes,
            }));
        }
        self.carry.clear();
        self.open = Open::Oversized;
    }

    /// Counts the non-zero bytes of `bytes` as garbage: zero bytes may be
    /// `leading_zero_8bits` or the start of a start code.
    fn add_garbage(&mut self, bytes: &[u8], offset: u64) {
        let Some(first) = bytes.iter().position(|&b| b != 0) else {
            return;
        };
        let offset = offset + first as u64;
        let len = bytes.iter().filter(|&&b| b != 0).count();
        match &mut self.garbage {
            Some((_, l)) => *l += len as u64,
            None => self.garbage = Some((offset, len as u64)),
        }
    }

    fn report_garbage(&mut self, out: &mut Vec<Split>) {
        if let Some((offset, len)) = self.garbage.take() {
            out.push(Split::Issue(SplitIssue::Garbage { offset, len }));
        }
    }
}

/// Where each NAL unit of one whole Annex B buffer (an access unit as a
/// subscriber receives it) lies, without start codes, as [`NalSpan`]s: the
/// splitter's rules on a buffer that is all there is (zero bytes in front of
/// a start code, and at the very end, belong to no NAL unit; bytes before
/// the first start code are no NAL unit either). For a frame the engine
/// made, `nal_spans(&frame.data)` is `frame.nals`.
pub fn nal_spans(data: &[u8]) -> Vec<NalSpan> {
    let mut spans = Vec::new();
    let mut open: Option<usize> = None;
    let mut search = 0;
    let mut push = |start: usize, mut end: usize| {
        while end > start && data.get(end - 1) == Some(&0) {
            end -= 1;
        }
        // A buffer over 4 GiB has no spans past it: frames are bounded by
        // the server's message limit, far below.
        if let (true, Ok(start), Ok(end)) = (end > start, u32::try_from(start), u32::try_from(end))
        {
            spans.push(NalSpan { start, end });
        }
    };
    while let Some(rel) = data.get(search..).and_then(find_start_code) {
        let sc = search + rel;
        if let Some(start) = open {
            push(start, sc);
        }
        open = Some(sc + 3);
        search = sc + 3;
    }
    if let Some(start) = open {
        push(start, data.len());
    }
    spans
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split_all(chunks: &[&[u8]]) -> (Vec<Vec<u8>>, Vec<SplitIssue>) {
        let mut s = AnnexBSplitter::new(1 << 20);
        let mut out = Vec::new();
        for c in chunks {
            s.push(Bytes::copy_from_slice(c), &mut out);
        }
        s.finish(&mut out);
        let mut nals = Vec::new();
        let mut issues = Vec::new();
        for o in out {
            match o {
                Split::Nal(n) => nals.push(n.data.to_vec()),
                Split::Issue(i) => issues.push(i),
            }
        }
        (nals, issues)
    }

    #[test]
    fn spans_of_a_whole_buffer_skip_start_codes_and_zeros() {
        let data = [
            9, 0, 0, 0, 1, 0x67, 1, 2, 0, 0, 1, 0x68, 3, 0, 0, 0, 0, 1, 0x65, 9, 0, 0,
        ];
        let spans = nal_spans(&data);
        let nals: Vec<&[u8]> = spans.iter().map(|s| s.bytes(&data)).collect();
        assert_eq!(nals, vec![&[0x67, 1, 2][..], &[0x68, 3], &[0x65, 9]]);
        assert!(nal_spans(&[1, 2, 3]).is_empty());
        assert!(nal_spans(&[]).is_empty());
        assert!(nal_spans(&[0, 0, 1]).is_empty());
        assert!(nal_spans(&[0, 0, 1, 0, 0, 1, 0x65]).len() == 1);
    }

    /// The spans of every frame the engine makes are what `nal_spans` finds
    /// in its bytes (a subscriber rebuilds them so).
    #[test]
    fn spans_of_engine_frames_are_found_again() {
        for name in ["high_bframes_30", "baseline_30", "open_gop_30"] {
            let path = format!("{}/../testdata/{name}.h264", env!("CARGO_MANIFEST_DIR"));
            let Ok(data) = std::fs::read(&path) else {
                panic!("{path} missing");
            };
            let frames = crate::pipeline::frames_of(Bytes::from(data), Default::default());
            assert!(!frames.is_empty(), "{name}");
            for f in frames {
                assert_eq!(nal_spans(&f.data), f.nals, "{name} frame {}", f.index);
            }
        }
    }

    #[test]
    fn three_and_four_byte_start_codes() {
        let s = b"\x00\x00\x00\x01\x67\xaa\x00\x00\x01\x68\xbb\x00\x00\x00\x01\x65\xcc\xdd";
        let (nals, issues) = split_all(&[s]);
        assert_eq!(
            nals,
            vec![vec![0x67, 0xaa], vec![0x68, 0xbb], vec![0x65, 0xcc, 0xdd]]
        );
        assert!(issues.is_empty());
    }

    #[test]
    fn start_code_straddles_chunks_every_way() {
        let s: &[u8] = b"\x00\x00\x00\x01\x67\xaa\x00\x00\x01\x68\xbb\x00\x00\x00\x01\x65\xcc\xdd";
        let whole = split_all(&[s]);
        for cut in 0..=s.len() {
            assert_eq!(split_all(&[&s[..cut], &s[cut..]]), whole, "cut at {cut}");
        }
        let ones: Vec<&[u8]> = s.chunks(1).collect();
        assert_eq!(split_all(&ones), whole);
        // Start code lengths survive any cut too.
        let lens = |chunks: &[&[u8]]| {
            let mut sp = AnnexBSplitter::new(1 << 20);
            let mut out = Vec::new();
            for c in chunks {
                sp.push(Bytes::copy_from_slice(c), &mut out);
            }
            sp.finish(&mut out);
            out.iter()
                .filter_map(|o| match o {
                    Split::Nal(n) => Some(n.prefix_len),
                    _ => None,
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(lens(&[s]), vec![4, 3, 4]);
        for cut in 0..=s.len() {
            assert_eq!(lens(&[&s[..cut], &s[cut..]]), vec![4, 3, 4], "cut at {cut}");
        }
    }

    #[test]
    fn trailing_zeros_are_not_data() {
        let s = b"\x00\x00\x01\x09\xf0\x00\x00\x00\x00\x00\x01\x41\x9a\x00\x00";
        let (nals, _) = split_all(&[s]);
        assert_eq!(nals, vec![vec![0x09, 0xf0], vec![0x41, 0x9a]]);
    }

    #[test]
    fn garbage_before_first_start_code_is_reported() {
        let s = b"\xde\xad\xbe\xef\x00\x00\x01\x67\x01";
        let (nals, issues) = split_all(&[s]);
        assert_eq!(nals, vec![vec![0x67, 0x01]]);
        assert_eq!(issues, vec![SplitIssue::Garbage { offset: 0, len: 4 }]);
    }

    #[test]
    fn no_start_code_at_all_is_garbage_and_bounded() {
        let mut s = AnnexBSplitter::new(64);
        let mut out = Vec::new();
        for _ in 0..100 {
            s.push(Bytes::from_static(&[0xab; 1000]), &mut out);
            assert_eq!(s.buffered(), 0);
        }
        let garbage: u64 = out
            .iter()
            .map(|o| match o {
                Split::Issue(SplitIssue::Garbage { len, .. }) => *len,
                _ => 0,
            })
            .sum();
        assert_eq!(garbage, 100_000);
    }

    #[test]
    fn oversized_nal_is_dropped_and_next_one_kept() {
        let mut data = b"\x00\x00\x01\x65".to_vec();
        data.extend(std::iter::repeat_n(0x11u8, 500));
        data.extend_from_slice(b"\x00\x00\x01\x41\x22");
        for chunking in [data.len(), 7, 1] {
            let mut s = AnnexBSplitter::new(100);
            let mut out = Vec::new();
            for c in data.chunks(chunking) {
                s.push(Bytes::copy_from_slice(c), &mut out);
                assert!(s.buffered() <= 100);
            }
            s.finish(&mut out);
            let nals: Vec<_> = out
                .iter()
                .filter_map(|o| match o {
                    Split::Nal(n) => Some(n.data.to_vec()),
                    _ => None,
                })
                .collect();
            assert_eq!(nals, vec![vec![0x41, 0x22]], "chunking {chunking}");
            assert!(out.iter().any(|o| matches!(
                o,
                Split::Issue(SplitIssue::TooLarge {
                    offset: 3,
                    limit: 100
                })
            )));
        }
    }

    #[test]
    fn nal_in_one_chunk_is_a_zero_copy_slice_with_adjacent_prefixes() {
        let chunk =
            Bytes::from_static(b"\x00\x00\x00\x01\x09\xf0\x00\x00\x01\x65\x88\x00\x00\x01\x41");
        let mut s = AnnexBSplitter::new(1 << 20);
        let mut out = Vec::new();
        s.push(chunk.clone(), &mut out);
        let nals: Vec<NalUnit> = out
            .into_iter()
            .filter_map(|o| match o {
                Split::Nal(n) => Some(n),
                _ => None,
            })
            .collect();
        assert_eq!(nals.len(), 2);
        let a = nals[0].origin.as_ref().unwrap();
        let b = nals[1].origin.as_ref().unwrap();
        assert_eq!((nals[0].prefix_len, nals[1].prefix_len), (4, 3));
        assert!(a.prefix_in_chunk && b.prefix_in_chunk);
        assert_eq!(a.end + 3, b.start);
        assert_eq!(nals[0].data.as_ptr(), chunk[4..].as_ptr());
        assert_eq!(nals[0].offset, 4);
        assert_eq!(nals[1].offset, 9);
    }
}
