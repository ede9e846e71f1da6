//! Recognises container files at the start of a stream that was meant to be
//! raw H.264 (Annex B): MP4/MOV, MPEG-TS, Matroska/WebM and FLV. Their bytes
//! would otherwise be read as a damaged Annex B stream (an MP4 as garbage,
//! an MPEG-TS as a few broken frames), so a tool can refuse them up front
//! and say how to extract the video.
//!
//! Pure: bytes in, a verdict out. [`detect`] wants the first
//! [`SNIFF_BYTES`] bytes of the stream (fewer when the stream is shorter).

use std::fmt;

/// Bytes of the stream's start that [`detect`] looks at: enough for three
/// 192-byte M2TS packets and the start of a fourth.
pub const SNIFF_BYTES: usize = 3 * 192 + 8;

/// A container format found at the start of a stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Container {
    /// ISO base media file format: MP4, MOV, M4V, 3GP.
    Mp4,
    /// MPEG transport stream (188-byte packets, or 192-byte M2TS).
    MpegTs,
    /// Matroska or WebM (EBML).
    Matroska,
    /// Flash Video.
    Flv,
}

impl Container {
    /// The container's usual name.
    pub fn name(self) -> &'static str {
        match self {
            Container::Mp4 => "MP4/MOV",
            Container::MpegTs => "MPEG-TS",
            Container::Matroska => "Matroska/WebM",
            Container::Flv => "FLV",
        }
    }

    /// The ffmpeg command that copies the H.264 video of `input` out as an
    /// Annex B stream into `output` (`-` for stdout), without re-encoding.
    /// Paths are quoted for a POSIX shell where needed.
    pub fn extract_command(self, input: &str, output: &str) -> String {
        format!(
            "ffmpeg -i {} -c:v copy -bsf:v h264_mp4toannexb -an -f h264 {}",
            shell_quote(input),
            shell_quote(output)
        )
    }
}

/// The video codec a container file's sample descriptions name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum VideoCodec {
    H264,
    H265,
}

/// The video codec named in a container's bytes (the whole file, or as
/// much of it as is at hand): an H.265 sample entry or configuration box
/// (`hvc1`, `hev1`, `hvcC`) or an H.264 one (`avc1`, `avc3`, `avcC`), or
/// Matroska's codec ids. `None` when neither is found (for MP4, the `moov`
/// may be past the bytes given).
pub fn video_codec(bytes: &[u8]) -> Option<VideoCodec> {
    let has = |tag: &[u8]| memchr::memmem::find(bytes, tag).is_some();
    if has(b"hvcC") || has(b"hvc1") || has(b"hev1") || has(b"V_MPEGH/ISO/HEVC") {
        Some(VideoCodec::H265)
    } else if has(b"avcC") || has(b"avc1") || has(b"avc3") || has(b"V_MPEG4/ISO/AVC") {
        Some(VideoCodec::H264)
    } else {
        None
    }
}

impl Container {
    /// [`Container::extract_command`] for the container's video codec:
    /// H.265 is copied out with `hevc_mp4toannexb` as a raw `hevc` stream.
    pub fn extract_command_for(self, codec: VideoCodec, input: &str, output: &str) -> String {
        match codec {
            VideoCodec::H264 => self.extract_command(input, output),
            VideoCodec::H265 => format!(
                "ffmpeg -i {} -c:v copy -bsf:v hevc_mp4toannexb -an -f hevc {}",
                shell_quote(input),
                shell_quote(output)
            ),
        }
    }
}

impl fmt::Display for Container {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The container whose signature `head` (the first bytes of a stream)
/// starts with, or `None` for anything else, raw H.264 included.
pub fn detect(head: &[u8]) -> Option<Container> {
    if head.starts_with(&[0x1a, 0x45, 0xdf, 0xa3]) {
        return Some(Container::Matroska);
    }
    if head.len() >= 4 && &head[..3] == b"FLV" && head[3] == 1 {
        return Some(Container::Flv);
    }
    if is_iso_bmff(head) {
        return Some(Container::Mp4);
    }
    if is_transport_stream(head, 188, 0) || is_transport_stream(head, 192, 4) {
        return Some(Container::MpegTs);
    }
    None
}

/// A top-level box at offset 0: a 32-bit size, then one of the box types an
/// MP4/MOV file starts with.
fn is_iso_bmff(head: &[u8]) -> bool {
    let Some(header) = head.get(..8) else {
        return false;
    };
    let size = u32::from_be_bytes([header[0], header[1], header[2], header[3]]);
    let kind = &header[4..8];
    if !matches!(
        kind,
        b"ftyp" | b"moov" | b"mdat" | b"free" | b"wide" | b"skip" | b"pnot"
    ) {
        return false;
    }
    match size {
        // To the end of the file.
        0 => true,
        // A 64-bit size follows. `00 00 00 01` is also an Annex B start
        // code, so ask for a plausible large size before calling it a box.
        1 => head.get(8..16).is_some_and(|b| {
            let mut large = [0u8; 8];
            large.copy_from_slice(b);
            u64::from_be_bytes(large) >= 16
        }),
        n => n >= 8,
    }
}

/// Sync bytes (0x47) at `offset` of at least three consecutive `packet`-byte
/// packets, and of every further packet that `head` holds.
fn is_transport_stream(head: &[u8], packet: usize, offset: usize) -> bool {
    let syncs = (offset..head.len()).step_by(packet);
    let mut count = 0;
    for i in syncs {
        if head[i] != 0x47 {
            return false;
        }
        count += 1;
    }
    count >= 3
}

/// `s` as one POSIX shell word (quoted where needed, as is when safe).
pub fn shell_quote(s: &str) -> String {
    let plain = !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./:=@+,".contains(&b));
    if plain {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(packet: usize, offset: usize, packets: usize) -> Vec<u8> {
        let mut v = vec![0xffu8; packet * packets];
        for p in 0..packets {
            v[p * packet + offset] = 0x47;
        }
        v
    }

    #[test]
    fn mp4_and_mov_boxes() {
        let mut mp4 = vec![0, 0, 0, 0x20];
        mp4.extend_from_slice(b"ftypisom\0\0\x02\0isomiso2avc1mp41");
        assert_eq!(detect(&mp4), Some(Container::Mp4));
        for kind in [b"moov", b"mdat", b"free", b"wide"] {
            let mut b = vec![0, 0, 0, 8];
            b.extend_from_slice(kind);
            assert_eq!(detect(&b), Some(Container::Mp4), "{kind:?}");
        }
        // A size that cannot be a box.
        assert_eq!(detect(b"\0\0\0\x04ftyp"), None);
        // Too short to tell.
        assert_eq!(detect(b"\0\0\0\x20fty"), None);
        // A large-size mdat, but not `00 00 00 01` followed by junk.
        let mut large = vec![0, 0, 0, 1];
        large.extend_from_slice(b"mdat");
        large.extend_from_slice(&1000u64.to_be_bytes());
        assert_eq!(detect(&large), Some(Container::Mp4));
        assert_eq!(detect(b"\0\0\0\x01mdat\0\0\0\0\0\0\0\0"), None);
    }

    #[test]
    fn transport_streams() {
        assert_eq!(detect(&ts(188, 0, 3)), Some(Container::MpegTs));
        assert_eq!(
            detect(&ts(188, 0, 5)[..SNIFF_BYTES]),
            Some(Container::MpegTs)
        );
        // M2TS: a 4-byte timestamp in front of each packet.
        assert_eq!(detect(&ts(192, 4, 3)), Some(Container::MpegTs));
        // Two packets are not enough; a broken third sync byte is not TS.
        assert_eq!(detect(&ts(188, 0, 2)), None);
        let mut bad = ts(188, 0, 4);
        bad[376] = 0;
        assert_eq!(detect(&bad), None);
        // A partial fourth packet still has to start with a sync byte.
        let mut partial = ts(188, 0, 3);
        partial.extend_from_slice(&[0x47, 1, 2]);
        assert_eq!(detect(&partial), Some(Container::MpegTs));
        partial[564] = 0;
        assert_eq!(detect(&partial), None);
    }

    #[test]
    fn matroska_and_flv() {
        assert_eq!(
            detect(&[0x1a, 0x45, 0xdf, 0xa3, 0x9f, 0x42, 0x86]),
            Some(Container::Matroska)
        );
        assert_eq!(detect(b"FLV\x01\x05\0\0\0\x09"), Some(Container::Flv));
        assert_eq!(detect(b"FLV\x02"), None);
        assert_eq!(detect(b"FL"), None);
    }

    #[test]
    fn raw_h264_and_other_bytes_are_not_containers() {
        let sps = [0, 0, 0, 1, 0x67, 0x42, 0xc0, 0x1e, 0xd9, 0, 0xa0, 0x47];
        assert_eq!(detect(&sps), None);
        assert_eq!(detect(&[0, 0, 1, 0x09, 0xf0, 0, 0, 0, 1, 0x67]), None);
        let mut annexb_with_syncs = vec![0u8; 600];
        annexb_with_syncs[..5].copy_from_slice(&[0, 0, 0, 1, 0x65]);
        annexb_with_syncs[188] = 0x47;
        assert_eq!(detect(&annexb_with_syncs), None);
        assert_eq!(detect(b""), None);
        assert_eq!(detect(b"these are not the frames"), None);
    }

    #[test]
    fn committed_streams_are_not_containers() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata");
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "h264") {
                let data = std::fs::read(&path).unwrap();
                let head = &data[..data.len().min(SNIFF_BYTES)];
                assert_eq!(detect(head), None, "{}", path.display());
                seen += 1;
            }
        }
        assert!(seen >= 4, "{seen} streams in {}", dir.display());
    }

    #[test]
    fn the_video_codec_picks_the_extract_command() {
        assert_eq!(
            video_codec(b"....stsd....hvc1....hvcC.."),
            Some(VideoCodec::H265)
        );
        assert_eq!(
            video_codec(b"....stsd....avc1....avcC.."),
            Some(VideoCodec::H264)
        );
        assert_eq!(video_codec(b"ftypisom"), None);
        assert_eq!(
            Container::Mp4.extract_command_for(VideoCodec::H265, "in.mp4", "in.h265"),
            "ffmpeg -i in.mp4 -c:v copy -bsf:v hevc_mp4toannexb -an -f hevc in.h265"
        );
        assert_eq!(
            Container::Mp4.extract_command_for(VideoCodec::H264, "in.mp4", "in.h264"),
            Container::Mp4.extract_command("in.mp4", "in.h264")
        );
    }

    #[test]
    fn extract_commands_quote_paths() {
        assert_eq!(
            Container::Mp4.extract_command("in.mp4", "in.h264"),
            "ffmpeg -i in.mp4 -c:v copy -bsf:v h264_mp4toannexb -an -f h264 in.h264"
        );
        assert_eq!(
            Container::MpegTs.extract_command("my clip's.ts", "-"),
            r"ffmpeg -i 'my clip'\''s.ts' -c:v copy -bsf:v h264_mp4toannexb -an -f h264 -"
        );
        assert_eq!(Container::Flv.to_string(), "FLV");
    }
}
