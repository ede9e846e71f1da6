//! A push parser for ADTS (ISO/IEC 13818-7 6.2 / ISO/IEC 14496-3 1.A.2):
//! AAC frames each behind a 7-byte header (9 with a CRC), in any chunking.
//!
//! Why hand-written rather than a crate (`adts-reader` is the one that
//! exists): the header is 56 bits of fixed fields, so parsing it is a few
//! shifts, while what matters here is around it — a frame split across
//! messages, resync after garbage with the false-sync check, reasons for
//! what is dropped, stream offsets for capture-time marks, and frames as
//! zero-copy slices of the publisher's buffer. A crate would give us the
//! shifts and leave all of that ours; the engine also keeps its dependency
//! list short (see `docs/architecture.md`).
//!
//! Sync: a stream (or a stream after a reconnect) may start with a header
//! at its first byte, which is trusted. Anywhere else — after garbage, or
//! after a header that does not parse — a candidate sync word is believed
//! only when the next frame's header follows where its length says (or the
//! stream ends there), so a stray `0xFFF` in garbage is not taken for a
//! frame. In sync, each frame is emitted as soon as its last byte arrives
//! (no waiting for the next header: one frame less of latency).
//!
//! The CRC (protection_absent = 0) is skipped, not checked: the two bytes
//! are left out of the payload, and a damaged frame reaches the decoder as
//! any damaged frame would.

use bytes::{Bytes, BytesMut};

/// The longest ADTS frame (13-bit `aac_frame_length`).
pub const MAX_FRAME: usize = (1 << 13) - 1;

/// The fixed and variable header fields an ADTS frame declares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AdtsHeader {
    /// MPEG-2 (1) or MPEG-4 (0) `ID`; informative only.
    pub mpeg2: bool,
    /// `profile_ObjectType` + 1: the MPEG-4 audio object type (1 Main,
    /// 2 LC, 3 SSR, 4 LTP).
    pub object_type: u8,
    pub sample_rate_index: u8,
    pub channel_config: u8,
    /// Header bytes: 7, or 9 with the CRC.
    pub header_len: usize,
    /// `aac_frame_length`: header and payload.
    pub frame_len: usize,
    /// `number_of_raw_data_blocks_in_frame` + 1.
    pub raw_blocks: u8,
}

/// The sampling rates of `sampling_frequency_index` 0–12.
pub const SAMPLE_RATES: [u32; 13] = [
    96_000, 88_200, 64_000, 48_000, 44_100, 32_000, 24_000, 22_050, 16_000, 12_000, 11_025, 8_000,
    7_350,
];

impl AdtsHeader {
    /// Parses a header from the first 7 bytes of `b` (`None` if fewer), or
    /// says why it is not one.
    pub fn parse(b: &[u8]) -> Option<Result<Self, &'static str>> {
        let h: &[u8; 7] = b.get(..7)?.try_into().ok()?;
        Some(Self::parse7(h))
    }

    fn parse7(h: &[u8; 7]) -> Result<Self, &'static str> {
        if h[0] != 0xFF || h[1] & 0xF0 != 0xF0 {
            return Err("no sync word");
        }
        if h[1] & 0x06 != 0 {
            return Err("layer is not 0");
        }
        let protection_absent = h[1] & 1 == 1;
        let sample_rate_index = (h[2] >> 2) & 0x0F;
        if sample_rate_index > 12 {
            return Err("reserved sampling_frequency_index");
        }
        let header_len = if protection_absent { 7 } else { 9 };
        let frame_len =
            (usize::from(h[3] & 0x03) << 11) | (usize::from(h[4]) << 3) | usize::from(h[5] >> 5);
        if frame_len <= header_len {
            return Err("aac_frame_length shorter than its header");
        }
        Ok(Self {
            mpeg2: h[1] & 0x08 != 0,
            object_type: (h[2] >> 6) + 1,
            sample_rate_index,
            channel_config: ((h[2] & 0x01) << 2) | (h[3] >> 6),
            header_len,
            frame_len,
            raw_blocks: (h[6] & 0x03) + 1,
        })
    }

    /// The sampling rate, Hz.
    pub fn sample_rate(&self) -> u32 {
        SAMPLE_RATES
            .get(usize::from(self.sample_rate_index))
            .copied()
            .unwrap_or(0)
    }

    /// A 7-byte header (no CRC) for a frame of `payload_len` bytes; `None`
    /// if the frame would be longer than ADTS can say or the fields do not
    /// fit (object type 1–4, rate index 0–12, channels 0–7).
    pub fn write(
        object_type: u8,
        sample_rate_index: u8,
        channel_config: u8,
        payload_len: usize,
    ) -> Option<[u8; 7]> {
        let len = payload_len.checked_add(7).filter(|l| *l <= MAX_FRAME)?;
        if !(1..=4).contains(&object_type) || sample_rate_index > 12 || channel_config > 7 {
            return None;
        }
        Some([
            0xFF,
            0xF1, // MPEG-4, layer 0, protection absent
            ((object_type - 1) << 6) | (sample_rate_index << 2) | (channel_config >> 2),
            ((channel_config & 3) << 6) | ((len >> 11) as u8 & 0x03),
            (len >> 3) as u8,
            (((len & 7) as u8) << 5) | 0x1F, // buffer fullness 0x7FF (VBR)
            0xFC,                            // fullness, one raw data block
        ])
    }
}

/// What the parser found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AdtsItem {
    Frame(AdtsFrame),
    /// Bytes that are not (whole) ADTS frames, skipped.
    Skipped {
        /// Stream offset of the first skipped byte.
        offset: u64,
        len: u64,
        /// Why, in words.
        reason: String,
    },
}

/// One ADTS frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdtsFrame {
    /// Stream offset of its header's first byte.
    pub offset: u64,
    pub header: AdtsHeader,
    /// The raw AAC payload (after the header and CRC).
    pub payload: Bytes,
}

/// See the module docs.
#[derive(Debug, Default)]
pub struct AdtsParser {
    /// Bytes not yet parsed (a partial frame, or bytes being searched).
    buf: BytesMut,
    /// Stream offset of `buf[0]`.
    offset: u64,
    /// In sync: the next byte is a header.
    synced: bool,
    /// Nothing parsed yet: a header at the first byte is trusted.
    at_start: bool,
    /// Garbage being skipped: (offset, len, reason) not yet reported.
    skipping: Option<(u64, u64, String)>,
    /// The fixed header bits (ISO/IEC 14496-3 1.A.2.2.1: sync word through
    /// `home`) of the last frame: constant within a stream, so a sync
    /// candidate after garbage must have them too.
    fixed: Option<[u8; 4]>,
}

/// The fixed-header bits of a header's first four bytes.
fn fixed_bits(h: &[u8]) -> Option<[u8; 4]> {
    let b: [u8; 4] = h.get(..4)?.try_into().ok()?;
    Some([b[0], b[1], b[2], b[3] & 0xF0])
}

impl AdtsParser {
    pub fn new() -> Self {
        Self {
            at_start: true,
            ..Self::default()
        }
    }

    /// Stream offset of the next byte pushed.
    pub fn stream_offset(&self) -> u64 {
        self.offset + self.buf.len() as u64
    }

    /// Bytes held (a partial frame).
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Feeds bytes; complete frames (and skipped bytes) go to `out`.
    pub fn push(&mut self, chunk: Bytes, out: &mut Vec<AdtsItem>) {
        if self.buf.is_empty() {
            // Frames that lie wholly in `chunk` are slices of it.
            let mut data = chunk;
            let used = self.parse(&mut data, false, out);
            self.offset += used as u64;
            self.buf.extend_from_slice(&data[used..]);
        } else {
            self.buf.extend_from_slice(&chunk);
            let mut data = self.buf.split().freeze();
            let used = self.parse(&mut data, false, out);
            self.offset += used as u64;
            self.buf.extend_from_slice(&data[used..]);
        }
        self.report_skip(out, false);
    }

    /// The stream ended: whatever is left is a frame if its header says it
    /// ends here, or skipped bytes.
    pub fn finish(&mut self, out: &mut Vec<AdtsItem>) {
        let mut data = self.buf.split().freeze();
        let used = self.parse(&mut data, true, out);
        self.offset += used as u64;
        if used < data.len() {
            let rest = (data.len() - used) as u64;
            self.skip(
                self.offset,
                rest,
                "the stream ended inside an ADTS frame (truncated)",
            );
            self.offset += rest;
        }
        self.report_skip(out, true);
        self.synced = false;
    }

    /// Parses `data` from its start; returns how many bytes were consumed
    /// (frames emitted, garbage skipped). `end`: no more bytes will come.
    fn parse(&mut self, data: &mut Bytes, end: bool, out: &mut Vec<AdtsItem>) -> usize {
        let mut pos = 0usize;
        loop {
            let rest = &data[pos..];
            if self.synced || (self.at_start && pos == 0) {
                let Some(parsed) = AdtsHeader::parse(rest) else {
                    return pos; // need more bytes
                };
                match parsed {
                    Ok(h) => {
                        if rest.len() < h.frame_len {
                            return pos;
                        }
                        self.at_start = false;
                        self.synced = true;
                        self.fixed = fixed_bits(rest);
                        self.report_skip(out, true);
                        out.push(AdtsItem::Frame(AdtsFrame {
                            offset: self.offset + pos as u64,
                            header: h,
                            payload: data.slice(pos + h.header_len..pos + h.frame_len),
                        }));
                        pos += h.frame_len;
                    }
                    Err(why) => {
                        self.at_start = false;
                        self.synced = false;
                        self.skip(
                            self.offset + pos as u64,
                            1,
                            &format!("not an ADTS header ({why})"),
                        );
                        pos += 1;
                    }
                }
                continue;
            }
            self.at_start = false;
            // Out of sync: look for a sync word whose frame is followed by
            // another header (or by the end of the stream).
            let Some(found) = find_sync(rest) else {
                // Keep the last byte: it may be the first of a sync word.
                let keep = usize::from(rest.last() == Some(&0xFF));
                let n = rest.len() - keep;
                if n > 0 {
                    self.skip(
                        self.offset + pos as u64,
                        n as u64,
                        "bytes with no ADTS sync word",
                    );
                }
                return pos + n;
            };
            if found > 0 {
                self.skip(
                    self.offset + pos as u64,
                    found as u64,
                    "bytes before the next ADTS frame",
                );
                pos += found;
            }
            let rest = &data[pos..];
            let Some(parsed) = AdtsHeader::parse(rest) else {
                return pos;
            };
            let Ok(h) = parsed else {
                self.skip(
                    self.offset + pos as u64,
                    1,
                    "a sync word without an ADTS header",
                );
                pos += 1;
                continue;
            };
            // A header with the fixed bits of the stream so far is
            // confirmed by any header after it; one with other bits (a new
            // format, or garbage that looks like a header) by one with the
            // same bits.
            let known = self.fixed.is_none() || fixed_bits(rest) == self.fixed;
            let next = &rest.get(h.frame_len..).unwrap_or(&[]);
            let confirmed = match AdtsHeader::parse(next) {
                Some(Ok(_)) => known || fixed_bits(next) == fixed_bits(rest),
                Some(Err(_)) => false,
                // Not enough bytes to see the next header: wait, unless the
                // stream ends exactly after this frame.
                None if end && next.is_empty() && rest.len() >= h.frame_len => true,
                None if end => false,
                None if rest.len() < h.frame_len + 7 && rest.len() < MAX_FRAME + 7 => return pos,
                None => false,
            };
            if confirmed {
                self.synced = true;
                continue;
            }
            self.skip(
                self.offset + pos as u64,
                1,
                "a sync word whose frame is not followed by another ADTS header",
            );
            pos += 1;
        }
    }

    /// Notes skipped bytes, merging adjacent runs into one report.
    fn skip(&mut self, offset: u64, len: u64, reason: &str) {
        match &mut self.skipping {
            Some((o, l, _)) if *o + *l == offset => *l += len,
            _ => {
                self.skipping = Some((offset, len, reason.to_string()));
            }
        }
    }

    /// Reports skipped bytes once the run is over (`done`) or at the end of
    /// a push.
    fn report_skip(&mut self, out: &mut Vec<AdtsItem>, done: bool) {
        let _ = done;
        if let Some((offset, len, reason)) = self.skipping.take() {
            out.push(AdtsItem::Skipped {
                offset,
                len,
                reason,
            });
        }
    }
}

/// Position of the first `0xFFF` sync word in `b`.
fn find_sync(b: &[u8]) -> Option<usize> {
    let mut from = 0;
    while let Some(i) = memchr::memchr(0xFF, &b[from..]) {
        let at = from + i;
        match b.get(at + 1) {
            Some(n) if n & 0xF0 == 0xF0 => return Some(at),
            Some(_) => from = at + 1,
            None => return None,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An ADTS frame of `len` payload bytes (CRC when `crc`), payload
    /// bytes `seed, seed+1, …` (never 0xFF).
    pub(crate) fn frame(len: usize, seed: u8, crc: bool) -> Vec<u8> {
        let mut h = AdtsHeader::write(2, 3, 2, len).unwrap().to_vec();
        if crc {
            h[1] &= 0xFE;
            let total = len + 9;
            h[3] = (h[3] & 0xFC) | ((total >> 11) as u8 & 3);
            h[4] = (total >> 3) as u8;
            h[5] = (((total & 7) as u8) << 5) | 0x1F;
            h.extend_from_slice(&[0xAB, 0xCD]);
        }
        h.extend((0..len).map(|i| (seed.wrapping_add(i as u8)) % 0xF0));
        h
    }

    fn parse_all(data: &[u8], chunk: usize) -> Vec<AdtsItem> {
        let mut p = AdtsParser::new();
        let mut out = Vec::new();
        for c in data.chunks(chunk.max(1)) {
            p.push(Bytes::copy_from_slice(c), &mut out);
        }
        p.finish(&mut out);
        out
    }

    fn frames(items: &[AdtsItem]) -> Vec<(u64, Vec<u8>)> {
        items
            .iter()
            .filter_map(|i| match i {
                AdtsItem::Frame(f) => Some((f.offset, f.payload.to_vec())),
                _ => None,
            })
            .collect()
    }

    fn skipped(items: &[AdtsItem]) -> u64 {
        items
            .iter()
            .map(|i| match i {
                AdtsItem::Skipped { len, .. } => *len,
                _ => 0,
            })
            .sum()
    }

    #[test]
    fn header_fields_round_trip() {
        let h = AdtsHeader::write(2, 4, 1, 300).unwrap();
        let p = AdtsHeader::parse(&h).unwrap().unwrap();
        assert_eq!(
            (p.object_type, p.sample_rate(), p.channel_config),
            (2, 44_100, 1)
        );
        assert_eq!((p.header_len, p.frame_len, p.raw_blocks), (7, 307, 1));
        assert!(AdtsHeader::write(2, 3, 2, MAX_FRAME).is_none());
        assert!(AdtsHeader::write(5, 3, 2, 10).is_none());
        let mut bad = h;
        bad[2] = (bad[2] & !0x3C) | (13 << 2);
        assert_eq!(
            AdtsHeader::parse(&bad),
            Some(Err("reserved sampling_frequency_index"))
        );
    }

    #[test]
    fn any_chunking_gives_the_same_frames() {
        let mut data = Vec::new();
        let mut want = Vec::new();
        for i in 0..40 {
            let f = frame(50 + i * 7, i as u8, i % 3 == 0);
            let hl = if i % 3 == 0 { 9 } else { 7 };
            want.push((data.len() as u64, f[hl..].to_vec()));
            data.extend_from_slice(&f);
        }
        for chunk in [1, 2, 3, 7, 9, 100, 333, 4096, data.len()] {
            let items = parse_all(&data, chunk);
            assert_eq!(frames(&items), want, "chunk {chunk}");
            assert_eq!(skipped(&items), 0, "chunk {chunk}");
        }
    }

    #[test]
    fn garbage_is_skipped_with_a_reason_and_sync_comes_back() {
        let mut data = vec![0x12, 0xFF, 0xF1, 0x00, 0x33]; // a stray sync word
        let mut want = 0;
        let good: Vec<Vec<u8>> = (0..5).map(|i| frame(100, i, false)).collect();
        for g in &good {
            data.extend_from_slice(g);
            want += 1;
        }
        // A damaged header mid-stream: its frame and bytes are skipped,
        // then the parser finds the next frame.
        data.extend_from_slice(&[0xFF, 0xF7, 0, 0, 0, 0, 0]); // layer 3
        data.extend_from_slice(&[9; 40]);
        for g in &good {
            data.extend_from_slice(g);
            want += 1;
        }
        for chunk in [1, 5, 64, data.len()] {
            let items = parse_all(&data, chunk);
            assert_eq!(frames(&items).len(), want, "chunk {chunk}");
            assert_eq!(skipped(&items), 5 + 7 + 40, "chunk {chunk}");
            let reasons: Vec<&String> = items
                .iter()
                .filter_map(|i| match i {
                    AdtsItem::Skipped { reason, .. } => Some(reason),
                    _ => None,
                })
                .collect();
            assert!(!reasons.is_empty());
        }
    }

    #[test]
    fn a_truncated_last_frame_is_skipped() {
        let mut data = frame(100, 1, false);
        let second = frame(100, 2, false);
        data.extend_from_slice(&second[..60]);
        let items = parse_all(&data, 17);
        assert_eq!(frames(&items).len(), 1);
        assert_eq!(skipped(&items), 60);
    }

    #[test]
    fn arbitrary_bytes_never_panic_and_account_for_every_byte() {
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for round in 0..200 {
            let mut data = Vec::new();
            while data.len() < 3000 {
                match next() % 4 {
                    0 => data.extend((0..next() % 50).map(|_| next() as u8)),
                    1 => data.extend_from_slice(&[0xFF, 0xF1]),
                    _ => data.extend_from_slice(&frame(
                        (next() % 300) as usize + 1,
                        round as u8,
                        next() % 2 == 0,
                    )),
                }
            }
            let items = parse_all(&data, (next() % 200) as usize + 1);
            let mut covered = 0u64;
            for i in &items {
                covered += match i {
                    AdtsItem::Frame(f) => f.header.frame_len as u64,
                    AdtsItem::Skipped { len, .. } => *len,
                };
            }
            assert_eq!(covered, data.len() as u64, "round {round}");
        }
    }
}
