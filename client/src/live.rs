//! `play --out`: an HLS + DASH tree rebuilt from a subscription.
//!
//! The subscription carries frames (Annex B with exact 90 kHz times and
//! their segment), a `SegmentReady` record per segment and `ManifestDelta`
//! edits, but not segment bytes. So the segments are muxed here, with the
//! server's muxers, from the frames of each segment; the codec config comes
//! from the SPS/PPS every keyframe carries (parsed with the server's
//! `ParamSets`, as the engine does); and the playlists are the server's own,
//! kept current by applying each delta to the join-time state.
//!
//! Order of events on the stream: a segment's frames, then its
//! `SegmentReady` (which names its config id, i.e. its `init-N.mp4`), then
//! the `ManifestDelta` it caused, then the next segment's first frame. A
//! segment is written when its record arrives, the playlists when the
//! delta does, so they never name a segment that is not on disk.
//!
//! The DASH MPD cannot skip segments (`$Number$` addressing), so a viewer
//! that joined late could not use the server's until every segment listed
//! before it joined had slid out of the window. It is rendered here
//! instead, by the engine's own [`Manifests`] fed the segments written
//! (the same records and options give the server's MPD), and written with
//! each segment, the first one included. [`LiveTree::finish`] closes the
//! tree when the viewer stops, however it stops: `#EXT-X-ENDLIST` and a
//! static MPD, so the tree plays to its end.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Result;
use bytes::Bytes;
use liveslice_engine::params::ParamSets;
use liveslice_engine::playlist::{ManifestEdit, ManifestState, Manifests, PlaylistOptions};
use liveslice_engine::{CodecConfig, Frame, SegmentRecord, TIMESCALE};
use liveslice_proto::v1 as pb;

use crate::tree::{nal_spans, TreeWriter};

pub struct LiveTree {
    tree: TreeWriter,
    params: ParamSets,
    hls: ManifestState,
    hls_ts: ManifestState,
    /// The join-time manifests arrived (deltas apply to them).
    have_state: bool,
    window: u64,
    /// Config of the last keyframe (its id is the server's, found later).
    current: Option<CodecConfig>,
    /// The config each segment's frames use.
    segment_config: BTreeMap<u64, CodecConfig>,
    frames: BTreeMap<u64, Vec<Frame>>,
    /// Config id of each segment written (for the playlists' `EXT-X-MAP`).
    config_ids: BTreeMap<u64, u32>,
    /// PTS - DTS of the first keyframe seen. The server shifts CMAF
    /// composition times by that of the session's first frame, which the
    /// proto does not carry; a keyframe's reorder delay is the same.
    composition_shift: Option<u32>,
    pub segments_written: u64,
    /// The subscription is thinned (`--fps`): segments are short of frames
    /// by design, which is not worth a note each time.
    thinned: bool,
    /// The session's segment target (ms), from `SessionInfo`.
    segment_target_ms: u32,
    /// Manifests of the segments written (DASH, and everything once the
    /// tree is closed).
    own: Option<Manifests>,
}

impl LiveTree {
    pub fn create(dir: &Path, thinned: bool) -> Result<Self> {
        Ok(Self {
            tree: TreeWriter::create(dir)?,
            params: ParamSets::new(),
            hls: ManifestState::default(),
            hls_ts: ManifestState::default(),
            have_state: false,
            window: 6,
            current: None,
            segment_config: BTreeMap::new(),
            frames: BTreeMap::new(),
            config_ids: BTreeMap::new(),
            composition_shift: None,
            segments_written: 0,
            thinned,
            segment_target_ms: 0,
            own: None,
        })
    }

    /// The first `SessionInfo` gives the manifests the deltas edit. Later
    /// ones (`changed`: new parameter sets) are not used for the manifests:
    /// they are taken when they are delivered, so they may already contain
    /// segments whose deltas are still on their way to us.
    pub fn session_info(&mut self, info: &pb::SessionInfo) {
        if info.segment_target_ms > 0 && self.own.is_none() {
            self.segment_target_ms = info.segment_target_ms;
        }
        if self.have_state {
            return;
        }
        let state = |e: &Option<pb::ManifestEdit>| {
            let mut s = ManifestState::default();
            if let Some(e) = e {
                s.apply(&edit(e));
            }
            s
        };
        self.hls = state(&info.hls_state);
        self.hls_ts = state(&info.hls_ts_state);
        self.window = u64::from(info.window_segments.max(1));
        self.have_state = true;
    }

    pub fn frame(&mut self, r: &pb::SliceResponse, info: &pb::FrameInfo) {
        let data = r.data.clone();
        let nals = nal_spans(&data);
        if r.is_keyframe {
            self.keyframe_config(&data, &nals);
            if self.composition_shift.is_none() {
                let shift = info.pts_90k.saturating_sub(info.dts_90k);
                self.composition_shift = Some(u32::try_from(shift).unwrap_or(u32::MAX));
            }
        }
        // Without parameter sets nothing can be muxed (a viewer always
        // starts at a keyframe, so this is only a damaged stream).
        let Some(cfg) = &self.current else { return };
        self.segment_config
            .entry(info.segment_sequence)
            .or_insert_with(|| cfg.clone());
        self.frames
            .entry(info.segment_sequence)
            .or_default()
            .push(Frame {
                index: info.index,
                data,
                nals,
                pts: info.pts_90k,
                dts: info.dts_90k,
                duration: info.duration_90k,
                is_keyframe: r.is_keyframe,
                random_access: info.random_access,
                sap_type: info.sap_type.min(u8::MAX as u32) as u8,
                is_leading: info.is_leading,
                is_reference: info.is_reference,
                segment: info.segment_sequence,
                config_id: 0, // the server's id, set when muxing
                capture_time_ns: info.capture_time_ns,
                ingest_time_ns: info.ingest_time_ns,
            });
    }

    /// Parses a keyframe's SPS/PPS and its first slice's PPS id into a
    /// codec config, as the engine does at every keyframe.
    fn keyframe_config(&mut self, data: &Bytes, nals: &[liveslice_engine::NalSpan]) {
        let mut pps_id = None;
        for span in nals {
            let nal = data.slice(span.start as usize..span.end as usize);
            match span.nal_type(data) {
                // A parameter set that does not parse is left out, as the
                // engine does; the frames will then fail to mux, and say so.
                7 => {
                    let _ = self.params.put_sps(&nal);
                }
                8 => {
                    let _ = self.params.put_pps(&nal);
                }
                1 | 5 if pps_id.is_none() => {
                    pps_id = self.params.parse_slice(&nal).ok().map(|s| s.pps_id);
                }
                _ => {}
            }
        }
        if let Some(cfg) = pps_id.and_then(|id| self.params.codec_config(id, 0)) {
            self.current = Some(cfg);
        }
    }

    /// Muxes and writes a finished segment from its received frames.
    /// Returns a problem worth telling the user (a segment that could not
    /// be built, or only in part), which does not stop playback.
    pub fn segment_ready(&mut self, s: &pb::SegmentReady) -> Option<String> {
        let seq = s.sequence;
        let rec = SegmentRecord {
            sequence: seq,
            start: s.start_90k,
            duration: s.duration_90k,
            frame_count: s.frame_count,
            first_frame_index: s.first_frame_index,
            keyframe_aligned: s.keyframe_aligned,
            sap_type: s.sap_type.min(u8::MAX as u32) as u8,
            discontinuity: s.discontinuity,
            discontinuity_sequence: 0, // only the playlists use it
            program_date_time_ms: s.program_date_time_ms,
            byte_size: s.byte_size,
            config_id: s.config_id,
            composition_shift: self.composition_shift.unwrap_or(0),
        };
        let frames = self.frames.remove(&seq).unwrap_or_default();
        let cfg = self.segment_config.remove(&seq);
        // Leftovers of earlier segments (whose record we never got) go too.
        self.frames = self.frames.split_off(&seq);
        self.segment_config = self.segment_config.split_off(&seq);
        let (Some(mut cfg), Some(first)) = (cfg, frames.first()) else {
            return Some(format!(
                "segment {seq} not written: none of its frames were received"
            ));
        };
        if rec.keyframe_aligned && !first.is_keyframe {
            return Some(format!(
                "segment {seq} not written: its frames from the keyframe on were not received"
            ));
        }
        cfg.id = s.config_id;
        let frames: Vec<Frame> = frames
            .into_iter()
            .map(|f| Frame {
                config_id: s.config_id,
                ..f
            })
            .collect();
        let refs: Vec<&Frame> = frames.iter().collect();
        if let Err(e) = self.tree.write_segment(&rec, &refs, &cfg) {
            return Some(format!("segment {seq} not written: {e:#}"));
        }
        self.segments_written += 1;
        self.config_ids.insert(seq, s.config_id);
        let own = self.own.get_or_insert_with(|| {
            // The server's availability start, exactly: a segment's
            // program date-time is it plus the segment's start.
            let availability_start_ms = rec
                .program_date_time_ms
                .saturating_sub(rec.start * 1000 / TIMESCALE);
            let defaults = PlaylistOptions::default();
            Manifests::new(
                PlaylistOptions {
                    target_segment_ms: if self.segment_target_ms > 0 {
                        self.segment_target_ms
                    } else {
                        defaults.target_segment_ms
                    },
                    window: usize::try_from(self.window).unwrap_or(defaults.window),
                    ..defaults
                },
                availability_start_ms,
            )
        });
        own.push(rec.clone(), &cfg, now_ms());
        let dash = own.dash(now_ms()).render();
        if let Err(e) = self.tree.write_dash(&dash) {
            return Some(format!("manifest.mpd not written: {e:#}"));
        }
        (!self.thinned && frames.len() != rec.frame_count as usize).then(|| {
            format!(
                "segment {seq}: {} of its {} frames received (joined late, or lagged)",
                frames.len(),
                rec.frame_count
            )
        })
    }

    /// Applies a delta and writes the manifests.
    pub fn manifest_delta(&mut self, d: &pb::ManifestDelta) -> Result<()> {
        if !self.have_state {
            return Ok(());
        }
        for (state, e) in [(&mut self.hls, &d.hls), (&mut self.hls_ts, &d.hls_ts)] {
            if let Some(e) = e {
                state.apply(&edit(e));
            }
        }
        self.write_manifests()?;
        let keep_from = d.media_sequence.saturating_sub(self.window);
        self.tree.prune_before(keep_from);
        self.config_ids = self.config_ids.split_off(&keep_from);
        Ok(())
    }

    /// The server's playlists, less the segments before the first one this
    /// tree has (those from before we joined): HLS from the first segment
    /// on disk; DASH (whose `$Number$` addressing cannot skip) only once
    /// every segment it names is here.
    fn write_manifests(&self) -> Result<()> {
        let ids = &self.config_ids;
        let Some(hls) = playable_hls(&self.hls, &self.tree, ids, "m4s") else {
            return Ok(());
        };
        let Some(hls_ts) = playable_hls(&self.hls_ts, &self.tree, ids, "ts") else {
            return Ok(());
        };
        self.tree.write_manifests(&hls, &hls_ts, None)
    }

    /// Closes the tree: the playlists get `#EXT-X-ENDLIST` and the MPD
    /// becomes static, so players play it to the end instead of waiting
    /// for more. The server's own closed playlists are kept when the
    /// session ended and they arrived; otherwise the ones of the segments
    /// written are closed here. Nothing to do before the first segment.
    pub fn finish(&mut self) -> Result<()> {
        let Some(own) = self.own.as_mut() else {
            return Ok(());
        };
        own.end(now_ms());
        let dash = own.dash(now_ms()).render();
        let closed = |s: &ManifestState| s.tail.contains("#EXT-X-ENDLIST");
        if !(self.have_state && closed(&self.hls) && closed(&self.hls_ts)) {
            self.tree
                .write_manifests(&own.hls_cmaf().render(), &own.hls_ts().render(), None)?;
        }
        self.tree.write_dash(&dash)
    }
}

fn now_ms() -> u64 {
    crate::input::now_unix_ns() / 1_000_000
}

fn edit(e: &pb::ManifestEdit) -> ManifestEdit {
    ManifestEdit {
        head: e.head.clone(),
        remove_entries: e.remove_entries,
        append_entries: e.append_entries.clone(),
        tail: e.tail.clone(),
    }
}

/// The segment an HLS entry names (its `seg-N.ext` line).
fn entry_sequence(entry: &str, ext: &str) -> Option<u64> {
    entry.lines().find_map(|l| {
        l.strip_prefix("seg-")?
            .strip_suffix(ext)?
            .strip_suffix('.')?
            .parse()
            .ok()
    })
}

/// The playlist from its first segment on disk, with the head's media
/// sequence, discontinuity sequence and init segment moved along; `None`
/// while no listed segment is on disk.
fn playable_hls(
    state: &ManifestState,
    tree: &TreeWriter,
    config_ids: &BTreeMap<u64, u32>,
    ext: &str,
) -> Option<String> {
    let skip = state
        .entries
        .iter()
        .position(|e| entry_sequence(e, ext).is_some_and(|s| tree.has_segment(s)))?;
    if skip == 0 {
        return Some(state.render());
    }
    let first = entry_sequence(&state.entries[skip], ext)?;
    let discontinuities = state
        .entries
        .iter()
        .take(skip)
        .filter(|e| e.contains("#EXT-X-DISCONTINUITY\n"))
        .count() as u64;
    let mut head = String::with_capacity(state.head.len());
    for line in state.head.lines() {
        if line.starts_with("#EXT-X-MEDIA-SEQUENCE:") {
            head.push_str(&format!("#EXT-X-MEDIA-SEQUENCE:{first}"));
        } else if let Some(v) = line.strip_prefix("#EXT-X-DISCONTINUITY-SEQUENCE:") {
            let v: u64 = v.parse().unwrap_or(0);
            head.push_str(&format!(
                "#EXT-X-DISCONTINUITY-SEQUENCE:{}",
                v + discontinuities
            ));
        } else if line.starts_with("#EXT-X-MAP:") {
            match config_ids.get(&first) {
                Some(id) => head.push_str(&format!("#EXT-X-MAP:URI=\"init-{id}.mp4\"")),
                None => head.push_str(line),
            }
        } else {
            head.push_str(line);
        }
        head.push('\n');
    }
    let mut out = head;
    for e in state.entries.iter().skip(skip) {
        out.push_str(e);
    }
    out.push_str(&state.tail);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_name_their_segment() {
        assert_eq!(entry_sequence("#EXTINF:1,\nseg-12.ts\n", "ts"), Some(12));
        assert_eq!(entry_sequence("seg-12.ts\n", "m4s"), None);
    }
}
