//! MP4/MOV files (ISO/IEC 14496-12), progressive or fragmented, taken
//! apart: the first video track (H.264 `avc1`/`avc3`, H.265
//! `hvc1`/`hev1`) as an Annex B elementary stream and the first AAC track
//! (`mp4a`) as ADTS frames placed against the video by the tracks' edit
//! lists and decode times.
//!
//! The boxes are decoded by the `mp4-atom` crate (already the engine's box
//! writer); walking the sample tables is ours, since the crate has no
//! sample reader: `stsz`/`stsc`/`stco`/`co64`/`stts`/`ctts` for samples in
//! `moov` (ISO/IEC 14496-12 8.6–8.7), `tfhd`/`tfdt`/`trun` with `trex`
//! defaults for movie fragments (8.8). Video samples are length-prefixed
//! NAL units (ISO/IEC 14496-15 5.3.2/8.3.2); their parameter sets come from
//! `avcC`/`hvcC` and are put in front of the first sample and of every
//! sample holding a random access picture (an `avc3`/`hev1` file's in-band
//! sets are kept too: a repeat is harmless).
//!
//! The server times video from the stream (POC, the SPS's timing or the
//! publisher's frame rate), as for any Annex B input, so only the tracks'
//! relative start is taken from the container.

use crate::error::{bail, Context, Result};
use bytes::{BufMut, Bytes, BytesMut};
use liveslice_engine::audio::adts::AdtsHeader;
use liveslice_engine::audio::config::parse_asc;
use liveslice_engine::container::Container;
use mp4_atom::{Codec, Decode, Moof, Moov, Stbl, StszSamples, Trak};

use super::{place_audio, Demuxed, VideoSource};
use crate::AudioTrack;

/// More samples than this in one track is not a file this reads (about 15
/// days of 30 fps video); with the file's size (a sample is at least a
/// byte), the bound keeps a damaged table from asking for gigabytes.
const MAX_SAMPLES: usize = 40_000_000;

/// A top-level box: its type and where it lies in the file (bytes, header
/// included; a truncated last box ends at the file's end).
#[derive(Debug)]
struct TopBox {
    kind: [u8; 4],
    start: usize,
    end: usize,
}

/// One sample of a track: where its bytes are (file offset, bytes) and its
/// decode time and composition offset (track timescale ticks).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Sample {
    offset: u64,
    size: u32,
    dts: i64,
    cts: i64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum VideoKind {
    H264,
    H265,
}

/// Takes `data` (an MP4/MOV file) apart.
///
/// `file`: the file `data` maps, if any (video samples are then read from
/// it; see [`Mp4Video`]).
pub fn demux_mp4(
    data: &Bytes,
    file: Option<std::sync::Arc<std::fs::File>>,
    name: &str,
    with_audio: bool,
) -> Result<Demuxed> {
    let boxes = top_level(data, name)?;
    let moov_box = boxes
        .iter()
        .find(|b| &b.kind == b"moov")
        .with_context(|| format!("{name}: the MP4 file has no moov box (is it complete?)"))?;
    let moov = Moov::decode(&mut &data[moov_box.start..moov_box.end]).map_err(|e| {
        crate::error::FileError::new(format!("{name}: its moov box cannot be read: {e}"))
    })?;
    let mut moofs = Vec::new();
    for b in boxes.iter().filter(|b| &b.kind == b"moof") {
        let moof = Moof::decode(&mut &data[b.start..b.end]).map_err(|e| {
            crate::error::FileError::new(format!(
                "{name}: the moof box at byte {} cannot be read: {e}",
                b.start
            ))
        })?;
        moofs.push((b.start as u64, moof));
    }
    let movie_timescale = u64::from(moov.mvhd.timescale.max(1));

    let video_trak = moov
        .trak
        .iter()
        .find(|t| video_entry(t).is_some())
        .with_context(|| {
            format!(
                "{name}: the MP4 file has no H.264 or H.265 video track (avc1, avc3, hvc1, hev1)"
            )
        })?;
    let (kind, nal_len, params) = video_entry(video_trak).unwrap_or((VideoKind::H264, 4, vec![]));
    let max = MAX_SAMPLES.min(data.len());
    let video_samples = samples(&moov, video_trak, &moofs, max, name)?;
    if video_samples.is_empty() {
        bail!("{name}: the MP4 file's video track has no samples");
    }
    let video_clock = TrackClock::of(video_trak, movie_timescale);
    let video_start = video_samples
        .iter()
        .map(|s| video_clock.presentation_ns(s.dts.saturating_add(s.cts)))
        .min()
        .unwrap_or(0);

    let aac = moov
        .trak
        .iter()
        .find_map(|t| aac_entry(t).map(|asc| (t, asc)));
    let audio_left_out = aac.is_some() && !with_audio;
    let audio = match aac.filter(|_| with_audio) {
        None => None,
        Some((trak, asc)) => {
            let audio_samples = samples(&moov, trak, &moofs, max, name)?;
            match audio_samples.first() {
                None => None,
                Some(first) => {
                    let track =
                        adts_track(data, &audio_samples, trak.mdia.mdhd.timescale, &asc, name)?;
                    let clock = TrackClock::of(trak, movie_timescale);
                    let offset = clock.presentation_ns(first.dts) - video_start;
                    place_audio(track, offset)
                }
            }
        }
    };
    let frame_rate = constant_rate(&video_samples, video_trak.mdia.mdhd.timescale);
    let video = Mp4Video::new(data, file, video_samples, kind, nal_len, params, name)?;
    Ok(Demuxed {
        video: VideoSource::Mp4(Box::new(video)),
        audio,
        audio_left_out,
        container: Container::Mp4,
        frame_rate,
    })
}

/// Frames per second when every sample lasts the same (decode time
/// deltas) and the rate is whole (1–1000): 30 from 512/15360, none for
/// 29.97 or a variable rate.
fn constant_rate(samples: &[Sample], timescale: u32) -> Option<u32> {
    let mut deltas = samples.windows(2).map(|w| w[1].dts - w[0].dts);
    let d = deltas.next()?;
    if d <= 0 || deltas.any(|x| x != d) {
        return None;
    }
    let (ts, d) = (i64::from(timescale), d);
    (ts % d == 0)
        .then(|| ts / d)
        .and_then(|r| u32::try_from(r).ok())
        .filter(|r| (1..=1000).contains(r))
}

/// The file's top-level boxes, in order.
fn top_level(data: &[u8], name: &str) -> Result<Vec<TopBox>> {
    let mut out = Vec::new();
    let mut pos = 0usize;
    while pos + 8 <= data.len() {
        let size32 = u32::from_be_bytes([data[pos], data[pos + 1], data[pos + 2], data[pos + 3]]);
        let kind = [data[pos + 4], data[pos + 5], data[pos + 6], data[pos + 7]];
        let (header, size) = match size32 {
            // `largesize` follows the type.
            1 => {
                let Some(b) = data.get(pos + 8..pos + 16) else {
                    bail!("{name}: the box at byte {pos} is cut short");
                };
                let mut s = [0u8; 8];
                s.copy_from_slice(b);
                (16u64, u64::from_be_bytes(s))
            }
            // The box runs to the end of the file.
            0 => (8, (data.len() - pos) as u64),
            s => (8, u64::from(s)),
        };
        if size < header {
            bail!(
                "{name}: the box at byte {pos} ({}) says it is {size} bytes long: not an MP4 file this can read",
                String::from_utf8_lossy(&kind)
            );
        }
        let end = usize::try_from(size)
            .ok()
            .and_then(|s| pos.checked_add(s))
            .unwrap_or(usize::MAX);
        out.push(TopBox {
            kind,
            start: pos,
            end: end.min(data.len()),
        });
        if end >= data.len() {
            break;
        }
        pos = end;
    }
    Ok(out)
}

/// A video track's codec, NAL length size (bytes) and parameter sets (in
/// the order a decoder needs them: VPS, SPS, PPS).
fn video_entry(trak: &Trak) -> Option<(VideoKind, usize, Vec<Vec<u8>>)> {
    let avc = |c: &mp4_atom::Avcc| {
        let mut p = c.sequence_parameter_sets.clone();
        p.extend(c.picture_parameter_sets.iter().cloned());
        (VideoKind::H264, usize::from(c.length_size), p)
    };
    let hevc = |c: &mp4_atom::Hvcc| {
        let mut arrays: Vec<&mp4_atom::HvcCArray> = c.arrays.iter().collect();
        // VPS (32), SPS (33), PPS (34), then SEI and the rest.
        arrays.sort_by_key(|a| a.nal_unit_type);
        let p = arrays
            .iter()
            .flat_map(|a| a.nalus.iter().cloned())
            .collect();
        (VideoKind::H265, usize::from(c.length_size_minus_one) + 1, p)
    };
    match trak.mdia.minf.stbl.stsd.codecs.first()? {
        Codec::Avc1(e) => Some(avc(&e.avcc)),
        Codec::Avc3(e) => Some(avc(&e.avcc)),
        Codec::Hvc1(e) => Some(hevc(&e.hvcc)),
        Codec::Hev1(e) => Some(hevc(&e.hvcc)),
        _ => None,
    }
}

/// An AAC track's AudioSpecificConfig (`esds`, object type 0x40).
fn aac_entry(trak: &Trak) -> Option<Vec<u8>> {
    let Codec::Mp4a(e) = trak.mdia.minf.stbl.stsd.codecs.first()? else {
        return None;
    };
    let dc = &e.esds.es_desc.dec_config;
    if dc.object_type_indication != 0x40 {
        return None;
    }
    dc.dec_specific.as_ref().map(|d| d.raw.clone())
}

/// A track's samples in decode order: those its `moov` sample table lists,
/// then those of its movie fragments.
fn samples(
    moov: &Moov,
    trak: &Trak,
    moofs: &[(u64, Moof)],
    max: usize,
    name: &str,
) -> Result<Vec<Sample>> {
    let mut out = table_samples(&trak.mdia.minf.stbl, max, name)?;
    let id = trak.tkhd.track_id;
    let trex = moov
        .mvex
        .as_ref()
        .and_then(|m| m.trex.iter().find(|t| t.track_id == id));
    let mut next_dts = out.last().map_or(0, |s| s.dts);
    for (moof_start, moof) in moofs {
        for traf in moof.traf.iter().filter(|t| t.tfhd.track_id == id) {
            let tfhd = &traf.tfhd;
            // `default-base-is-moof`, or no base offset in the first track
            // fragment: data offsets count from the moof's first byte.
            let base = tfhd.base_data_offset.unwrap_or(*moof_start);
            let mut dts = traf
                .tfdt
                .as_ref()
                .map_or(next_dts, |t| t.base_media_decode_time as i64);
            let mut pos = base;
            for trun in &traf.trun {
                if let Some(o) = trun.data_offset {
                    pos = base.checked_add_signed(i64::from(o)).with_context(|| {
                        format!("{name}: a trun's data offset {o} points before the file")
                    })?;
                }
                for e in trun.samples.iter() {
                    let duration = e
                        .duration
                        .or(tfhd.default_sample_duration)
                        .or(trex.map(|t| t.default_sample_duration))
                        .unwrap_or(0);
                    let size = e
                        .size
                        .or(tfhd.default_sample_size)
                        .or(trex.map(|t| t.default_sample_size))
                        .unwrap_or(0);
                    if out.len() >= max {
                        bail!("{name}: a track lists more than {max} samples (damaged?)");
                    }
                    out.push(Sample {
                        offset: pos,
                        size,
                        dts,
                        cts: e.cts.unwrap_or(0),
                    });
                    pos = pos.saturating_add(u64::from(size));
                    dts = dts.saturating_add(i64::from(duration));
                }
            }
            next_dts = dts;
        }
    }
    Ok(out)
}

/// The samples a `moov` sample table lists (none in a fragmented file's
/// usual empty table).
fn table_samples(stbl: &Stbl, max: usize, name: &str) -> Result<Vec<Sample>> {
    let sizes: Vec<u32> = match &stbl.stsz.samples {
        StszSamples::Identical { count, size } => {
            if *count as usize > max {
                bail!("{name}: a track lists {count} samples, more than {max} (damaged?)");
            }
            vec![*size; *count as usize]
        }
        StszSamples::Different { sizes } => sizes.clone(),
    };
    if sizes.is_empty() {
        return Ok(Vec::new());
    }
    let chunks: Vec<u64> = match (&stbl.stco, &stbl.co64) {
        (_, Some(c)) => c.entries.clone(),
        (Some(c), None) => c.entries.iter().map(|o| u64::from(*o)).collect(),
        (None, None) => bail!("{name}: a track lists samples but no chunk offsets (stco/co64)"),
    };
    let stsc = &stbl.stsc.entries;
    if stsc.is_empty() {
        bail!("{name}: a track lists samples but no sample-to-chunk table (stsc)");
    }
    let mut out = Vec::with_capacity(sizes.len());
    let mut entry = 0;
    for (i, &chunk_offset) in chunks.iter().enumerate() {
        let chunk = i as u64 + 1;
        while entry + 1 < stsc.len() && u64::from(stsc[entry + 1].first_chunk) <= chunk {
            entry += 1;
        }
        let mut offset = chunk_offset;
        for _ in 0..stsc[entry].samples_per_chunk {
            let Some(&size) = sizes.get(out.len()) else {
                break;
            };
            out.push(Sample {
                offset,
                size,
                dts: 0,
                cts: 0,
            });
            offset = offset.saturating_add(u64::from(size));
        }
        if out.len() == sizes.len() {
            break;
        }
    }
    if out.len() < sizes.len() {
        bail!(
            "{name}: a track's chunks hold {} of its {} samples (stsc/stco disagree)",
            out.len(),
            sizes.len()
        );
    }
    let mut dts = 0i64;
    let mut k = 0;
    'stts: for e in &stbl.stts.entries {
        for _ in 0..e.sample_count {
            let Some(s) = out.get_mut(k) else {
                break 'stts;
            };
            s.dts = dts;
            dts = dts.saturating_add(i64::from(e.sample_delta));
            k += 1;
        }
    }
    if let Some(ctts) = &stbl.ctts {
        let mut k = 0;
        'ctts: for e in &ctts.entries {
            for _ in 0..e.sample_count {
                let Some(s) = out.get_mut(k) else {
                    break 'ctts;
                };
                s.cts = e.sample_offset;
                k += 1;
            }
        }
    }
    Ok(out)
}

/// A sample's bytes, or why they are not in the file.
fn sample_bytes<'a>(
    data: &'a [u8],
    s: &Sample,
    i: usize,
    track: &str,
    name: &str,
) -> Result<&'a [u8]> {
    let start = usize::try_from(s.offset).unwrap_or(usize::MAX);
    let end = start.saturating_add(s.size as usize);
    data.get(start..end).with_context(|| {
        format!(
            "{name}: {track} sample {i} (bytes {start}..{end}) lies past the end of the file ({} bytes): is it truncated?",
            data.len()
        )
    })
}

/// Whether a NAL unit is a random access picture's slice: H.264 IDR (5),
/// H.265 IRAP (16–23).
fn is_random_access(nal: &[u8], kind: VideoKind) -> bool {
    match (kind, nal.first()) {
        (VideoKind::H264, Some(b)) => b & 0x1f == 5,
        (VideoKind::H265, Some(b)) => (16..=23).contains(&((b >> 1) & 0x3f)),
        (_, None) => false,
    }
}

/// Whether a NAL unit is an access unit delimiter (H.264 9, H.265 35).
fn is_delimiter(nal: &[u8], kind: VideoKind) -> bool {
    match (kind, nal.first()) {
        (VideoKind::H264, Some(b)) => b & 0x1f == 9,
        (VideoKind::H265, Some(b)) => (b >> 1) & 0x3f == 35,
        (_, None) => false,
    }
}

/// The video samples as one Annex B stream.
/// An MP4 file's video track as Annex B, made one access unit at a time
/// (from positional reads of the file, or from its bytes when there is no
/// file): a file of any size is never copied whole. Each sample's length-prefixed NAL units become start-code
/// ones, with the track's parameter sets (`avcC`/`hvcC`) in front of the
/// first sample and of every sample holding a random access picture (after
/// its access unit delimiter, if it starts with one).
pub struct Mp4Video {
    data: Bytes,
    /// The file `data` maps, when there is one: samples are read from it
    /// with positional reads (`pread`), so the pages of a large file are
    /// not mapped into this process one after the other (its resident
    /// memory stays flat; the kernel's page cache holds what was read).
    file: Option<std::sync::Arc<std::fs::File>>,
    samples: Vec<Sample>,
    kind: VideoKind,
    nal_len: usize,
    params: Vec<Vec<u8>>,
    name: String,
}

impl std::fmt::Debug for Mp4Video {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mp4Video")
            .field("name", &self.name)
            .field("samples", &self.samples.len())
            .finish()
    }
}

impl Mp4Video {
    /// The track's samples checked: every one within the file, its NAL
    /// unit lengths within it (errors name the file and the sample).
    fn new(
        data: &Bytes,
        file: Option<std::sync::Arc<std::fs::File>>,
        samples: Vec<Sample>,
        kind: VideoKind,
        nal_len: usize,
        params: Vec<Vec<u8>>,
        name: &str,
    ) -> Result<Self> {
        if !(1..=4).contains(&nal_len) {
            bail!(
                "{name}: the video's NAL unit length size is {nal_len} bytes (1, 2 or 4 expected)"
            );
        }
        let v = Self {
            data: data.clone(),
            file,
            samples,
            kind,
            nal_len,
            params,
            name: name.to_string(),
        };
        let mut buf = Vec::new();
        for i in 0..v.samples.len() {
            let bytes = v.sample(i, &mut buf)?;
            v.nals(i, bytes, &mut Vec::new())?;
        }
        Ok(v)
    }

    /// Sample `i`'s bytes: read into `buf` from the file, or a slice of
    /// the bytes given.
    fn sample<'a>(&'a self, i: usize, buf: &'a mut Vec<u8>) -> Result<&'a [u8]> {
        let Some(s) = self.samples.get(i) else {
            bail!("{}: there is no video sample {i}", self.name);
        };
        // Within the file (no page of it is touched by this check).
        let bytes = sample_bytes(&self.data, s, i, "video", &self.name)?;
        let Some(file) = &self.file else {
            return Ok(bytes);
        };
        use std::os::unix::fs::FileExt;
        buf.resize(bytes.len(), 0);
        file.read_exact_at(buf, s.offset).with_context(|| {
            format!(
                "{}: cannot read video sample {i} at byte {}",
                self.name, s.offset
            )
        })?;
        Ok(&buf[..])
    }

    /// Access units (samples) in the track.
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    /// No samples (never, once made: a track without samples is refused).
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// The NAL units of sample `i` (its `bytes`), without their length
    /// prefixes.
    fn nals<'a>(&self, i: usize, bytes: &'a [u8], nals: &mut Vec<&'a [u8]>) -> Result<()> {
        let name = &self.name;
        nals.clear();
        let mut p = 0;
        while p < bytes.len() {
            let Some(len) = bytes.get(p..p + self.nal_len) else {
                bail!("{name}: video sample {i} ends inside a NAL unit length");
            };
            let len = len.iter().fold(0usize, |a, b| (a << 8) | usize::from(*b));
            p += self.nal_len;
            let Some(nal) = bytes.get(p..p + len) else {
                bail!(
                    "{name}: video sample {i} has a NAL unit of {len} bytes at {p} that runs past its {} bytes",
                    bytes.len()
                );
            };
            if !nal.is_empty() {
                nals.push(nal);
            }
            p += len;
        }
        Ok(())
    }

    /// Appends access unit `i` (decode order) to `out` as Annex B.
    pub fn access_unit(&self, i: usize, out: &mut BytesMut) -> Result<()> {
        let (mut buf, mut nals) = (Vec::new(), Vec::new());
        let bytes = self.sample(i, &mut buf)?;
        self.nals(i, bytes, &mut nals)?;
        let rap = i == 0 || nals.iter().any(|n| is_random_access(n, self.kind));
        let mut rest = &nals[..];
        if let Some((first, tail)) = nals.split_first() {
            if is_delimiter(first, self.kind) {
                put_nal(out, first);
                rest = tail;
            }
        }
        if rap {
            for ps in &self.params {
                put_nal(out, ps);
            }
        }
        for n in rest {
            put_nal(out, n);
        }
        Ok(())
    }

    /// The whole track as one Annex B stream (a copy the size of the
    /// video; tests).
    #[cfg(test)]
    pub fn to_annexb(&self) -> Result<Bytes> {
        let total: usize = self.samples.iter().map(|s| s.size as usize + 16).sum();
        let mut out = BytesMut::with_capacity(total);
        for i in 0..self.samples.len() {
            self.access_unit(i, &mut out)?;
        }
        Ok(out.freeze())
    }
}

fn put_nal(out: &mut BytesMut, nal: &[u8]) {
    out.put_slice(&[0, 0, 0, 1]);
    out.put_slice(nal);
}

/// The AAC samples as ADTS frames (a 7-byte header each, from the
/// AudioSpecificConfig), each at its decode time from the first sample's
/// (ns): a fragmented file may stretch a sample's duration rather than
/// carry an edit list, so the count of frames is not their time.
fn adts_track(
    data: &[u8],
    samples: &[Sample],
    timescale: u32,
    asc: &[u8],
    name: &str,
) -> Result<AudioTrack> {
    let cfg = parse_asc(asc)
        .map_err(|e| crate::error::FileError::new(format!("{name}: its AAC configuration: {e}")))?;
    let mut out = BytesMut::with_capacity(samples.iter().map(|s| s.size as usize + 7).sum());
    let mut spans = Vec::with_capacity(samples.len());
    for (i, s) in samples.iter().enumerate() {
        let frame = sample_bytes(data, s, i, "audio", name)?;
        let Some(header) = AdtsHeader::write(
            cfg.core_object_type,
            cfg.sample_rate_index,
            cfg.channel_config,
            frame.len(),
        ) else {
            bail!(
                "{name}: audio sample {i} ({} bytes) cannot be carried in ADTS",
                frame.len()
            );
        };
        let start = out.len();
        out.put_slice(&header);
        out.put_slice(frame);
        spans.push((start, out.len()));
    }
    let out = out.freeze();
    let first = samples.first().map_or(0, |s| s.dts);
    let ns = |dts: i64| {
        let t = i128::from(dts - first) * 1_000_000_000 / i128::from(timescale.max(1));
        u64::try_from(t).unwrap_or(0)
    };
    let frames: Vec<(Bytes, u64)> = spans
        .iter()
        .zip(samples)
        .map(|((a, b), s)| (out.slice(*a..*b), ns(s.dts)))
        .collect();
    let frame_ns = 1024 * 1_000_000_000 / u64::from(cfg.sample_rate.max(1));
    let length_ns = frames.last().map_or(0, |(_, t)| t + frame_ns);
    Ok(AudioTrack { frames, length_ns })
}

/// A track's presentation timeline: its timescale and edit list (an empty
/// first edit delays the track; the first media edit's start is presented
/// at that delay, ISO/IEC 14496-12 8.6.6).
struct TrackClock {
    timescale: i128,
    delay_ns: i128,
    media_start: i128,
}

impl TrackClock {
    fn of(trak: &Trak, movie_timescale: u64) -> Self {
        let mut delay_ns = 0i128;
        let mut media_start = 0i128;
        if let Some(elst) = trak.edts.as_ref().and_then(|e| e.elst.as_ref()) {
            for e in &elst.entries {
                match e.media_time {
                    None => {
                        delay_ns += i128::from(e.segment_duration) * 1_000_000_000
                            / i128::from(movie_timescale.max(1))
                    }
                    Some(t) => {
                        media_start = i128::from(t);
                        break;
                    }
                }
            }
        }
        Self {
            timescale: i128::from(trak.mdia.mdhd.timescale.max(1)),
            delay_ns,
            media_start,
        }
    }

    /// Presentation time (ns on the movie timeline) of media time `t`
    /// (track timescale ticks).
    fn presentation_ns(&self, t: i64) -> i64 {
        let ns =
            self.delay_ns + (i128::from(t) - self.media_start) * 1_000_000_000 / self.timescale;
        ns.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn testdata(name: &str) -> Bytes {
        let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../testdata")
            .join(name);
        Bytes::from(std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
    }

    /// NAL unit types of an Annex B stream, in order.
    fn nal_types(annexb: &[u8], kind: VideoKind) -> Vec<u8> {
        let mut out = Vec::new();
        let mut i = 0;
        // 3- and 4-byte start codes alike.
        while i + 3 <= annexb.len() {
            if annexb[i..i + 3] == [0, 0, 1] {
                let b = annexb.get(i + 3).copied().unwrap_or(0);
                out.push(match kind {
                    VideoKind::H264 => b & 0x1f,
                    VideoKind::H265 => (b >> 1) & 0x3f,
                });
                i += 3;
            } else {
                i += 1;
            }
        }
        out
    }

    /// Slices that begin a picture (H.264 `first_mb_in_slice` 0, H.265
    /// `first_slice_segment_in_pic_flag`): one per access unit.
    fn first_slices(annexb: &[u8], kind: VideoKind) -> usize {
        let mut n = 0;
        for i in 0..annexb.len().saturating_sub(5) {
            if annexb[i..i + 3] != [0, 0, 1] {
                continue;
            }
            let h = &annexb[i + 3..];
            n += usize::from(match kind {
                VideoKind::H264 => matches!(h[0] & 0x1f, 1 | 5) && h[1] & 0x80 != 0,
                VideoKind::H265 => (h[0] >> 1) & 0x3f < 32 && h[2] & 0x80 != 0,
            });
        }
        n
    }

    #[test]
    fn the_box_walk_reads_sizes_of_each_kind() {
        // An 8-byte free box, a 16-byte box with a 64-bit size, a box to
        // the end of the file.
        let mut f = vec![0, 0, 0, 8, b'f', b'r', b'e', b'e'];
        f.extend([0, 0, 0, 1, b's', b'k', b'i', b'p', 0, 0, 0, 0, 0, 0, 0, 16]);
        f.extend([0, 0, 0, 0, b'm', b'd', b'a', b't', 1, 2, 3]);
        let b = top_level(&f, "t").unwrap();
        let got: Vec<_> = b.iter().map(|b| (&b.kind, b.start, b.end)).collect();
        assert_eq!(
            got,
            vec![(b"free", 0, 8), (b"skip", 8, 24), (b"mdat", 24, 35)]
        );
        // A size smaller than its header is refused, not looped on.
        let bad = [0, 0, 0, 4, b'm', b'o', b'o', b'v'];
        assert!(top_level(&bad, "t").is_err());
    }

    /// A value of `testdata/NAME.expect.toml` (`key = number` lines).
    fn expect(name: &str, key: &str) -> usize {
        let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../testdata")
            .join(format!("{name}.expect.toml"));
        let text = std::fs::read_to_string(&p).unwrap();
        text.lines()
            .find_map(|l| {
                let (k, v) = l.split_once('=')?;
                (k.trim() == key).then(|| v.trim().parse().ok())?
            })
            .unwrap_or_else(|| panic!("{key} in {}", p.display()))
    }

    /// Every video sample comes out as one access unit (one AUD each for
    /// these files), the parameter sets (SPS/PPS, or VPS/SPS/PPS) in front
    /// of every random access picture; every AAC frame from the video's
    /// start on comes out with a valid ADTS header, the first at 0 ns.
    #[test]
    fn progressive_fragmented_and_hevc_files_give_every_frame() {
        for (name, kind) in [
            ("mp4_av_48k", VideoKind::H264),
            ("mp4_av_48k_frag", VideoKind::H264),
            ("mp4_hevc_44k", VideoKind::H265),
        ] {
            let file = format!("{name}.mp4");
            let d = demux_mp4(&testdata(&file), None, &file, true).unwrap();
            assert_eq!(d.container, Container::Mp4);
            let video = d.video.into_bytes().unwrap();
            let types = nal_types(&video, kind);
            let (params, irap): (&[u8], fn(u8) -> bool) = match kind {
                VideoKind::H264 => (&[7, 8], |t| t == 5),
                VideoKind::H265 => (&[32, 33, 34], |t| (16..=23).contains(&t)),
            };
            assert_eq!(
                first_slices(&video, kind),
                expect(name, "video_frames"),
                "{file}: access units"
            );
            let mut raps = 0;
            for (i, t) in types.iter().enumerate() {
                if irap(*t) && (i == 0 || !irap(types[i - 1])) {
                    raps += 1;
                    let before: Vec<u8> = types[..i]
                        .iter()
                        .copied()
                        .filter(|t| *t != 39 && *t != 6)
                        .collect();
                    assert!(
                        before.ends_with(params),
                        "{file}: parameter sets before the IRAP at NAL {i}"
                    );
                }
            }
            assert_eq!(
                raps,
                expect(name, "video_keyframes"),
                "{file}: random access points"
            );
            assert_eq!(d.frame_rate, Some(30), "{file}: the container's frame rate");
            let audio = d.audio.expect("audio track");
            assert_eq!(
                audio.frames.len(),
                expect(name, "audio_frames_from_video_start"),
                "{file}: every AAC frame from the video's start"
            );
            assert!(
                audio.frames[0].1 < 12_000_000,
                "{file}: the audio starts with the video"
            );
            let rate = expect(name, "sample_rate") as u32;
            for (f, _) in &audio.frames {
                let h = AdtsHeader::parse(f).expect("a header").expect("valid");
                assert_eq!(h.frame_len, f.len());
                assert_eq!(h.sample_rate(), rate);
            }
        }
    }

    /// Read from the file (positional reads, as `package` and `publish` of
    /// a file do) or from its bytes: the same access units.
    #[test]
    fn samples_read_from_the_file_are_the_same_access_units() {
        for name in ["mp4_av_48k", "mp4_av_48k_frag", "mp4_hevc_44k"] {
            let file = format!("{name}.mp4");
            let path = format!("{}/../testdata/{file}", env!("CARGO_MANIFEST_DIR"));
            let opened = std::sync::Arc::new(std::fs::File::open(&path).unwrap());
            let data = testdata(&file);
            let from_file = demux_mp4(&data, Some(opened), &file, true).unwrap();
            let from_bytes = demux_mp4(&data, None, &file, true).unwrap();
            let (VideoSource::Mp4(a), VideoSource::Mp4(b)) = (from_file.video, from_bytes.video)
            else {
                panic!("{file}: MP4 video");
            };
            assert_eq!(a.len(), b.len());
            for i in 0..a.len() {
                let (mut x, mut y) = (BytesMut::new(), BytesMut::new());
                a.access_unit(i, &mut x).unwrap();
                b.access_unit(i, &mut y).unwrap();
                assert_eq!(x, y, "{file}: access unit {i}");
            }
        }
    }

    #[test]
    fn a_truncated_file_says_so() {
        let full = testdata("mp4_av_48k.mp4");
        // The moov is at the end: cut into it.
        let cut = full.slice(..full.len() - 100);
        let err = demux_mp4(&cut, None, "cut.mp4", true)
            .err()
            .expect("refused")
            .to_string();
        assert!(err.contains("cut.mp4"), "{err}");
        // Cut inside the media data of a fragmented file: the samples past
        // the end are named.
        let frag = testdata("mp4_av_48k_frag.mp4");
        let cut = frag.slice(..frag.len() / 2);
        let err = format!(
            "{:#}",
            demux_mp4(&cut, None, "half.mp4", true)
                .err()
                .expect("refused")
        );
        assert!(err.contains("half.mp4"), "{err}");
    }

    /// Damaged files (bit flips, truncations, zeroed runs) are refused with
    /// an error or taken apart; nothing panics.
    #[test]
    fn damaged_files_never_panic() {
        let mut seed: u64 = 0x5eed;
        let mut next = move || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            seed >> 33
        };
        for file in ["mp4_av_48k.mp4", "mp4_av_48k_frag.mp4", "mp4_hevc_44k.mp4"] {
            let clean = testdata(file).to_vec();
            for round in 0..300 {
                let mut d = clean.clone();
                match round % 3 {
                    0 => {
                        for _ in 0..1 + next() % 8 {
                            let i = (next() as usize) % d.len();
                            d[i] ^= 1 << (next() % 8);
                        }
                    }
                    1 => d.truncate((next() as usize) % d.len()),
                    _ => {
                        let at = (next() as usize) % d.len();
                        let n = ((next() as usize) % 64).min(d.len() - at);
                        d[at..at + n].fill(if next() % 2 == 0 { 0 } else { 0xff });
                    }
                }
                let d = Bytes::from(d);
                let r = std::panic::catch_unwind(|| {
                    demux_mp4(&d, None, file, true)
                        .and_then(|x| x.video.into_bytes())
                        .map(|v| v.len())
                });
                assert!(r.is_ok(), "{file} round {round}: panicked");
            }
        }
    }
}
