//! Where Annex B bytes come from (a file, stdin or the embedded demo stream),
//! and the argument parsers the subcommands share.

use std::fmt;
use std::path::PathBuf;
use std::pin::Pin;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use bytes::{Bytes, BytesMut};
use liveslice_engine::access_unit::{AccessUnitAssembler, AssemblerLimits};
use liveslice_engine::annexb::{AnnexBSplitter, Split};
use liveslice_engine::container::{self, Container, VideoCodec, SNIFF_BYTES};
use tokio::io::{AsyncRead, AsyncReadExt};

/// An input stream of H.264 Annex B bytes.
#[derive(Clone, Debug)]
pub enum Input {
    File(PathBuf),
    Stdin,
    /// Bytes compiled into the binary (the demo's test stream).
    Embedded(&'static str, &'static [u8]),
    /// Bytes in memory (the video of a demuxed container), and what they
    /// came from.
    Memory(String, Bytes),
    /// A container file's video (an MP4's read an access unit at a time,
    /// an MPEG-TS file's a PES packet at a time: never copied whole), and
    /// what it came from.
    Demuxed(String, std::sync::Arc<liveslice_files::demux::VideoSource>),
}

pub type Reader = Pin<Box<dyn AsyncRead + Send>>;

impl Input {
    /// `-` is stdin, anything else a path.
    pub fn from_arg(arg: &str) -> Self {
        if arg == "-" {
            Input::Stdin
        } else {
            Input::File(PathBuf::from(arg))
        }
    }

    /// Whether it can be read again from the start (`--loop`).
    pub fn rewindable(&self) -> bool {
        !matches!(self, Input::Stdin)
    }

    /// Whether its bytes arrive over time (a pipe), rather than being all
    /// there to read (a regular file, the embedded stream).
    pub fn is_live(&self) -> bool {
        match self {
            Input::Stdin => true,
            Input::File(p) => std::fs::metadata(p).is_ok_and(|m| !m.is_file()),
            Input::Embedded(..) | Input::Memory(..) | Input::Demuxed(..) => false,
        }
    }

    /// A regular file that is a container this client takes apart
    /// (MPEG-TS, MP4/MOV), demuxed: its video as Annex B and its AAC track;
    /// `None` for anything else (raw Annex B, stdin, pipes, or a container
    /// [`Input::open`] refuses).
    /// `with_audio`: read its AAC track too.
    pub fn demux(&self, with_audio: bool) -> Result<Option<liveslice_files::demux::Demuxed>> {
        let Some((bytes, file)) = self.mapped()? else {
            return Ok(None);
        };
        Ok(
            liveslice_files::demux::demux_file(&bytes, Some(file), &self.to_string(), with_audio)
                .transpose()?,
        )
    }

    /// A regular, non-empty file's bytes through a read-only memory map.
    fn mapped_file(&self) -> Result<Option<Bytes>> {
        Ok(self.mapped()?.map(|(bytes, _)| bytes))
    }

    /// A regular, non-empty file's bytes through a read-only memory map,
    /// and the open file.
    fn mapped(&self) -> Result<Option<(Bytes, std::sync::Arc<std::fs::File>)>> {
        let Input::File(p) = self else {
            return Ok(None);
        };
        Ok(liveslice_files::package::map_file(p)?)
    }

    /// A regular file's whole content through a read-only memory map, so
    /// frames are slices of it and nothing is copied by reads; `None` for
    /// stdin, pipes and the embedded stream (read them with [`Input::open`]).
    /// A container file is refused as by `open`.
    pub fn map(&self) -> Result<Option<Bytes>> {
        let Some(bytes) = self.mapped_file()? else {
            return Ok(None);
        };
        if let Some(c) = container::detect(&bytes[..bytes.len().min(SNIFF_BYTES)]) {
            bail!(
                "{}",
                self.container_refusal(c, container::video_codec(&bytes))
            );
        }
        Ok(Some(bytes))
    }

    /// Opens the input from its start. A container (Matroska, FLV; MP4
    /// and MPEG-TS on a pipe, since files of those are taken apart by
    /// [`Input::demux`] first) is refused with the ffmpeg command that
    /// extracts its video.
    pub async fn open(&self) -> Result<Reader> {
        let mut reader: Reader = match self {
            Input::File(p) => Box::pin(
                tokio::fs::File::open(p)
                    .await
                    .with_context(|| format!("cannot open {}", p.display()))?,
            ),
            Input::Stdin => Box::pin(tokio::io::stdin()),
            Input::Embedded(_, bytes) => return Ok(Box::pin(*bytes)),
            Input::Memory(_, bytes) => return Ok(Box::pin(std::io::Cursor::new(bytes.clone()))),
            Input::Demuxed(_, video) => return Ok(Box::pin(VideoReader::new(video.clone()))),
        };
        let head = read_head(&mut reader)
            .await
            .with_context(|| format!("cannot read {self}"))?;
        if let Some(c) = container::detect(&head) {
            // A file: look at all of it for the codec (an MP4's `moov` is
            // often at its end); a pipe: at what was read.
            let codec = match self.map() {
                Ok(Some(all)) => container::video_codec(&all),
                _ => container::video_codec(&head),
            };
            bail!("{}", self.container_refusal(c, codec));
        }
        Ok(Box::pin(std::io::Cursor::new(head).chain(reader)))
    }

    /// One line: what the input is and how to get its video out of it, by
    /// its codec (both commands when it is not known).
    fn container_refusal(&self, c: Container, codec: Option<VideoCodec>) -> String {
        let (input, output) = match self {
            Input::File(p) => {
                let input = p.display().to_string();
                let ext = if codec == Some(VideoCodec::H265) {
                    "h265"
                } else {
                    "h264"
                };
                let output = p.with_extension(ext).display().to_string();
                let output = if output == input {
                    format!("{input}.annexb.{ext}")
                } else {
                    output
                };
                (input, output)
            }
            _ => ("INPUT".to_string(), "-".to_string()),
        };
        let command = match codec {
            Some(codec) => c.extract_command_for(codec, &input, &output),
            None => format!(
                "{} (H.265 video: {})",
                c.extract_command(&input, &output),
                c.extract_command_for(VideoCodec::H265, &input, &output)
            ),
        };
        let raw = if codec == Some(VideoCodec::H265) {
            "raw H.265 (Annex B)"
        } else {
            "raw H.264 (Annex B)"
        };
        match self {
            Input::File(p) => format!(
                "{input} is in the {c} container format, not {raw} as liveslice takes; \
                 extract the video with: {command} (or remux it to MP4, which liveslice takes \
                 apart with its audio: ffmpeg -i {} -c copy {})",
                container::shell_quote(&input),
                container::shell_quote(&p.with_extension("mp4").display().to_string())
            ),
            _ if matches!(c, Container::Mp4 | Container::MpegTs) => format!(
                "{self} is in the {c} container format, not {raw}; liveslice takes {c} files \
                 apart (video and AAC) when given as a path, not on a pipe: pass the file's \
                 path, or have ffmpeg extract the video into the pipe: {command}"
            ),
            _ => format!(
                "{self} is in the {c} container format, not {raw} as liveslice takes; have \
                 ffmpeg extract the video into the pipe: {command}"
            ),
        }
    }
}

/// The first [`SNIFF_BYTES`] of a stream (fewer at its end), or fewer once
/// it clearly starts as Annex B: a live pipe is not kept waiting.
async fn read_head(reader: &mut Reader) -> std::io::Result<Vec<u8>> {
    let mut head = vec![0u8; SNIFF_BYTES];
    let mut n = 0;
    while n < SNIFF_BYTES {
        // 16 bytes tell an Annex B start code from an MP4 box of size 1.
        if n >= 16 && starts_with_start_code(&head[..n]) && container::detect(&head[..n]).is_none()
        {
            break;
        }
        let m = reader.read(&mut head[n..]).await?;
        if m == 0 {
            break;
        }
        n += m;
    }
    head.truncate(n);
    Ok(head)
}

fn starts_with_start_code(b: &[u8]) -> bool {
    b.starts_with(&[0, 0, 1]) || b.starts_with(&[0, 0, 0, 1])
}

/// Cuts a stream that arrives over time at access-unit boundaries, with the
/// engine's own splitter and assembler, so each access unit can be sent as
/// soon as it is complete (with `end_of_access_unit`) instead of waiting
/// for a chunk to fill. The bytes go out exactly as they came, garbage
/// included: the server judges them.
pub struct AuCutter {
    splitter: AnnexBSplitter,
    assembler: AccessUnitAssembler,
    splits: Vec<Split>,
    aus: Vec<liveslice_engine::access_unit::AccessUnit>,
    notes: Vec<liveslice_engine::access_unit::AssemblerNote>,
    /// The H.265 assembler, once an H.265 VPS/SPS came before any H.264 SPS.
    hevc: Option<liveslice_engine::hevc::HevcAssembler>,
    /// Whether the codec is decided (an SPS of either was seen).
    decided: bool,
    hevc_aus: Vec<liveslice_engine::hevc::HevcAu>,
    hevc_rejected: Vec<liveslice_engine::hevc::HevcError>,
    /// Bytes received and not yet handed out.
    pending: BytesMut,
    /// Stream offset of `pending[0]`.
    pending_offset: u64,
    /// Above this, pending bytes go out without waiting for a boundary
    /// (input that is not H.264, or one huge access unit).
    max_pending: usize,
}

/// What [`AuCutter`] hands out.
#[derive(Debug, PartialEq, Eq)]
pub enum Cut {
    /// Bytes ending exactly at an access-unit boundary.
    Units(Bytes),
    /// Bytes with no boundary at their end.
    Partial(Bytes),
}

impl AuCutter {
    pub fn new(max_pending: usize) -> Self {
        let opts = liveslice_engine::PipelineOptions::default();
        Self {
            splitter: AnnexBSplitter::new(opts.max_nal_bytes),
            assembler: AccessUnitAssembler::new(AssemblerLimits {
                max_au_bytes: opts.max_au_bytes,
                ..AssemblerLimits::default()
            }),
            splits: Vec::new(),
            aus: Vec::new(),
            notes: Vec::new(),
            hevc: None,
            decided: false,
            hevc_aus: Vec::new(),
            hevc_rejected: Vec::new(),
            pending: BytesMut::new(),
            pending_offset: 0,
            max_pending: max_pending.max(1),
        }
    }

    /// Takes the next bytes of the stream; what can go out now goes to
    /// `out`.
    pub fn push(&mut self, chunk: &[u8], out: &mut Vec<Cut>) {
        self.pending.extend_from_slice(chunk);
        self.splitter
            .push(Bytes::copy_from_slice(chunk), &mut self.splits);
        for split in self.splits.drain(..) {
            let Split::Nal(nal) = split else { continue };
            // Where this NAL unit's start code begins: if it starts a new
            // access unit, the previous one ends there.
            let start = nal.offset.saturating_sub(u64::from(nal.prefix_len));
            if !self.decided {
                if liveslice_engine::hevc::looks_like_hevc_parameter_set(&nal.data) {
                    let opts = liveslice_engine::PipelineOptions::default();
                    self.hevc = Some(liveslice_engine::hevc::HevcAssembler::new(
                        opts.max_au_bytes,
                        16_384,
                    ));
                    self.decided = true;
                } else if nal.nal_type() == 7 && !nal.forbidden_bit() {
                    self.decided = true;
                }
            }
            let completed = match self.hevc.as_mut() {
                Some(h) => {
                    h.push(nal, &mut self.hevc_aus, &mut self.hevc_rejected);
                    self.hevc_rejected.clear();
                    let any = !self.hevc_aus.is_empty();
                    self.hevc_aus.clear();
                    any
                }
                None => {
                    self.assembler.push(nal, &mut self.aus, &mut self.notes);
                    self.notes.clear();
                    let any = !self.aus.is_empty();
                    self.aus.clear();
                    any
                }
            };
            if !completed {
                continue;
            }
            if start > self.pending_offset {
                let len = usize::try_from(start - self.pending_offset)
                    .unwrap_or(usize::MAX)
                    .min(self.pending.len());
                self.pending_offset += len as u64;
                out.push(Cut::Units(self.pending.split_to(len).freeze()));
            }
        }
        if self.pending.len() >= self.max_pending {
            self.pending_offset += self.pending.len() as u64;
            out.push(Cut::Partial(self.pending.split().freeze()));
        }
    }

    /// The end of the stream: whatever is left (not marked complete: the
    /// server judges whether the last access unit was cut short).
    pub fn finish(&mut self) -> Option<Bytes> {
        if self.pending.is_empty() {
            return None;
        }
        self.pending_offset += self.pending.len() as u64;
        Some(self.pending.split().freeze())
    }
}

impl fmt::Display for Input {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Input::File(p) => write!(f, "{}", p.display()),
            Input::Stdin => f.write_str("stdin"),
            Input::Embedded(name, _) => f.write_str(name),
            Input::Memory(name, _) | Input::Demuxed(name, _) => f.write_str(name),
        }
    }
}

/// A frame rate as the server takes it (`target_fps`: 1..=1000).
pub fn parse_fps(s: &str) -> Result<u32, String> {
    let v: u32 = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a frame rate (an integer, e.g. 30)"))?;
    if !(1..=1000).contains(&v) {
        return Err(format!("{v} is out of range (1..=1000)"));
    }
    Ok(v)
}

/// A segment duration as the server takes it: "2s", "1500ms", 100ms..=60s.
pub fn parse_segment_duration(s: &str) -> Result<Duration, String> {
    let d = liveslice_server::config::parse_duration(s)?;
    if !(100..=60_000).contains(&d.as_millis()) {
        return Err(format!("{s:?} is out of range (100ms..=60s)"));
    }
    Ok(d)
}

/// A part target as the server takes it (`--part-duration`: 100ms..=2s).
pub fn parse_part_duration(s: &str) -> Result<Duration, String> {
    let d = liveslice_server::config::parse_duration(s)?;
    if !(100..=2_000).contains(&d.as_millis()) {
        return Err(format!("{s:?} is out of range (100ms..=2s)"));
    }
    Ok(d)
}

/// A wait time: "10s", "500ms".
pub fn parse_wait(s: &str) -> Result<Duration, String> {
    liveslice_server::config::parse_duration(s)
}

/// Wall-clock now, Unix nanoseconds (0 if the clock is before 1970).
pub fn now_unix_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// A container file's video as an Annex B byte stream, each access unit
/// (MP4) or PES packet (MPEG-TS) read when the bytes before it were read.
/// The file reads are positional or buffered reads from within
/// `poll_read`: a few KiB to a few hundred KiB each, usually from the page
/// cache, so they do not hold up the client's runtime noticeably.
struct VideoReader {
    source: std::sync::Arc<liveslice_files::demux::VideoSource>,
    /// The next MP4 sample.
    next: usize,
    /// The MPEG-TS file's PES reader, once started.
    ts: Option<liveslice_files::demux::ts::TsVideoPayloads>,
    /// An in-memory stream's read position.
    pos: usize,
    pending: bytes::BytesMut,
}

impl VideoReader {
    fn new(source: std::sync::Arc<liveslice_files::demux::VideoSource>) -> Self {
        Self {
            source,
            next: 0,
            ts: None,
            pos: 0,
            pending: bytes::BytesMut::new(),
        }
    }

    /// The next piece of the stream into `pending`; false at its end.
    fn fill(&mut self) -> Result<bool> {
        use liveslice_files::demux::VideoSource;
        match &*self.source {
            VideoSource::Mp4(v) => {
                if self.next >= v.len() {
                    return Ok(false);
                }
                self.next += 1;
                v.access_unit(self.next - 1, &mut self.pending)?;
            }
            VideoSource::Ts(v) => {
                let payloads = self.ts.get_or_insert_with(|| v.payloads());
                match payloads.next_payload()? {
                    Some(data) => self.pending.extend_from_slice(&data),
                    None => return Ok(false),
                }
            }
            VideoSource::AnnexB(b) => {
                if self.pos >= b.len() {
                    return Ok(false);
                }
                let end = (self.pos + (1 << 16)).min(b.len());
                self.pending.extend_from_slice(&b[self.pos..end]);
                self.pos = end;
            }
        }
        Ok(true)
    }
}

impl AsyncRead for VideoReader {
    fn poll_read(
        self: Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let this = self.get_mut();
        while this.pending.is_empty() {
            match this.fill() {
                Ok(true) => {}
                Ok(false) => break,
                Err(e) => {
                    return std::task::Poll::Ready(Err(std::io::Error::other(format!("{e:#}"))))
                }
            }
        }
        let n = this.pending.len().min(buf.remaining());
        buf.put_slice(&this.pending.split_to(n));
        std::task::Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn testdata(name: &str) -> Vec<u8> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../testdata")
            .join(name);
        std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    fn cut(data: &[u8], chunk: usize, max_pending: usize) -> Vec<Cut> {
        let mut c = AuCutter::new(max_pending);
        let mut out = Vec::new();
        for piece in data.chunks(chunk) {
            c.push(piece, &mut out);
        }
        out.extend(c.finish().map(Cut::Partial));
        out
    }

    fn bytes(c: &Cut) -> &Bytes {
        match c {
            Cut::Units(b) | Cut::Partial(b) => b,
        }
    }

    #[test]
    fn cuts_at_every_access_unit_whatever_the_chunking() {
        for name in [
            "baseline_30.h264",
            "high_bframes_30.h264",
            "main_slices4_30.h264",
        ] {
            let data = testdata(name);
            let frames = liveslice_engine::pipeline::frames_of(
                Bytes::from(data.clone()),
                Default::default(),
            );
            let whole = cut(&data, data.len(), usize::MAX);
            for chunk in [1, 7, 1500, 65536] {
                let cuts = cut(&data, chunk, usize::MAX);
                assert_eq!(cuts, whole, "{name} in {chunk}-byte chunks");
            }
            // An access unit is cut once the first NAL unit of the next
            // one is whole (the splitter sees its end at the start code
            // after it); the last one or two go out at the end.
            let units = whole.iter().filter(|c| matches!(c, Cut::Units(_))).count();
            assert!(
                (frames.len() - 2..frames.len()).contains(&units),
                "{name}: {units} cuts, {} frames",
                frames.len()
            );
            assert!(matches!(whole.last(), Some(Cut::Partial(_))));
            let joined: Vec<u8> = whole.iter().flat_map(|c| bytes(c).to_vec()).collect();
            assert!(joined == data, "{name}: the bytes go out as they came");
            // Each cut is one access unit, as the engine frames it (these
            // streams carry their SPS/PPS in front of every keyframe).
            for (c, f) in whole.iter().take(units).zip(&frames) {
                assert!(*bytes(c) == f.data, "{name}: frame {}", f.index);
            }
        }
    }

    #[test]
    fn cuts_h265_at_every_access_unit() {
        for name in ["hevc_bframes_30.h265", "hevc_open_gop_30.h265"] {
            let data = testdata(name);
            let frames = liveslice_engine::pipeline::frames_of(
                Bytes::from(data.clone()),
                Default::default(),
            );
            let whole = cut(&data, data.len(), usize::MAX);
            assert_eq!(cut(&data, 1500, usize::MAX), whole, "{name}");
            let units = whole.iter().filter(|c| matches!(c, Cut::Units(_))).count();
            assert!(
                (frames.len() - 2..frames.len()).contains(&units),
                "{name}: {units} cuts, {} frames",
                frames.len()
            );
            for (c, f) in whole.iter().take(units).zip(&frames) {
                assert!(*bytes(c) == f.data, "{name}: frame {}", f.index);
            }
        }
    }

    #[test]
    fn input_that_never_forms_access_units_still_goes_out() {
        let junk = vec![0xabu8; 10_000];
        let cuts = cut(&junk, 1000, 4096);
        assert!(cuts.iter().all(|c| matches!(c, Cut::Partial(_))));
        assert!(cuts.iter().all(|c| bytes(c).len() <= 4096 + 1000));
        let joined: Vec<u8> = cuts.iter().flat_map(|c| bytes(c).to_vec()).collect();
        assert_eq!(joined, junk);
    }
}
