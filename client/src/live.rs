//! `play --out`: an HLS + DASH tree rebuilt from a subscription, written by
//! the engine's own [`TreeWriter`].
//!
//! The subscription carries frames (Annex B with exact 90 kHz times and
//! their segment), a `SegmentReady` record per segment and `ManifestDelta`
//! edits, but neither segment bytes nor parts. The engine's [`Replay`]
//! turns the frames and records back into the events the server's pipeline
//! emitted — codec configs from the SPS/PPS in front of random access
//! points, parts by the segmenter's own rule — and the tree writer muxes
//! them as the server does: a subscriber from the session's start gets the
//! server's bytes. The part target comes from `SessionInfo.part_target_ms`
//! (`--part-duration` stands in for a server that does not send it),
//! clamped to the session's segment target as the engine clamps it. A viewer that joins late gets a tree of
//! its own that plays, but whose CMAF chunk numbers and MPEG-TS continuity
//! counters start at its first segment (see [`Replay`]).
//!
//! Asking for the segments' bytes instead (`segments_cmaf`/`segments_ts`)
//! would double what the server sends, and could not honour a thinned
//! (`--fps`) subscription, whose segments are muxed here from the frames
//! it receives.
//!
//! Order of events on the stream: a segment's frames, then its
//! `SegmentReady` (which names its config id, i.e. its `init-N.mp4`, and
//! the composition shift), then the `ManifestDelta` it caused, then the next
//! segment's first frame. A segment is written when its record arrives, the
//! playlists when the delta does; they are the server's own, kept current
//! by applying each delta to the join-time state, less the segments the
//! tree does not hold, so they never name a segment that is not on disk.
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
use std::sync::Arc;

use anyhow::Result;
use liveslice_engine::playlist::{ManifestEdit, ManifestState, Manifests, PlaylistOptions};
use liveslice_engine::replay::Replay;
use liveslice_engine::tree::TreeWriter;
use liveslice_engine::{CodecConfig, Event, Frame, PipelineOptions, SegmentRecord, TIMESCALE};
use liveslice_proto::v1 as pb;

pub struct LiveTree {
    tree: TreeWriter,
    /// Made at the first frame, with the part target clamped to the
    /// session's segment target (known from `SessionInfo` by then).
    replay: Option<Replay>,
    /// `--part-duration`, ms.
    part_target_ms: u32,
    events: Vec<Event>,
    hls: ManifestState,
    hls_ts: ManifestState,
    /// The join-time manifests arrived (deltas apply to them).
    have_state: bool,
    window: u64,
    /// The config of the last segment written.
    config: Option<Arc<CodecConfig>>,
    /// The frame rate the server times the stream with (`SessionInfo`):
    /// the manifests state it.
    frame_rate: Option<(u32, u32)>,
    /// Config id of each segment written (for the playlists' `EXT-X-MAP`).
    config_ids: BTreeMap<u64, u32>,
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
    pub fn create(dir: &Path, thinned: bool, part_target_ms: u32) -> Result<Self> {
        Ok(Self {
            tree: TreeWriter::create(dir)?,
            replay: None,
            part_target_ms,
            events: Vec::new(),
            hls: ManifestState::default(),
            hls_ts: ManifestState::default(),
            have_state: false,
            window: 6,
            config: None,
            frame_rate: None,
            config_ids: BTreeMap::new(),
            thinned,
            segment_target_ms: 0,
            own: None,
        })
    }

    pub fn segments_written(&self) -> u64 {
        self.tree.segments_written()
    }

    /// The first `SessionInfo` gives the manifests the deltas edit. Later
    /// ones (`changed`: new parameter sets) are not used for the manifests:
    /// they are taken when they are delivered, so they may already contain
    /// segments whose deltas are still on their way to us.
    pub fn session_info(&mut self, info: &pb::SessionInfo) {
        if info.part_target_ms > 0 && self.replay.is_none() {
            // The server says its part target: its parts, its bytes.
            self.part_target_ms = info.part_target_ms;
        }
        if info.segment_target_ms > 0 && self.own.is_none() {
            self.segment_target_ms = info.segment_target_ms;
        }
        if info.frame_rate_num > 0 && info.frame_rate_den > 0 {
            self.frame_rate = Some((info.frame_rate_num, info.frame_rate_den));
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

    fn replay(&mut self) -> &mut Replay {
        let (segment_target_ms, part_target_ms) = (self.segment_target_ms, self.part_target_ms);
        self.replay.get_or_insert_with(|| {
            // The server's clamp: within 100 ms and the segment target.
            let defaults = PipelineOptions::default();
            let opts = PipelineOptions {
                segment_target_ms: if segment_target_ms > 0 {
                    segment_target_ms
                } else {
                    defaults.segment_target_ms
                },
                part_target_ms,
                ..defaults
            };
            Replay::new(opts.effective_part_target_ms())
        })
    }

    pub fn frame(&mut self, r: &pb::SliceResponse, info: &pb::FrameInfo) {
        self.replay().frame(Frame {
            index: info.index,
            data: r.data.clone(),
            nals: Vec::new(), // found again by the replay
            pts: info.pts_90k,
            dts: info.dts_90k,
            duration: info.duration_90k,
            is_keyframe: r.is_keyframe,
            random_access: info.random_access,
            sap_type: info.sap_type.min(u8::MAX as u32) as u8,
            is_leading: info.is_leading,
            is_reference: info.is_reference,
            segment: info.segment_sequence,
            config_id: 0, // the server's, from the segment's record
            capture_time_ns: info.capture_time_ns,
            ingest_time_ns: info.ingest_time_ns,
        });
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
            composition_shift: s.composition_shift_90k,
            audio: None,
        };
        let mut events = std::mem::take(&mut self.events);
        let received = match self.replay().segment(rec.clone(), &mut events) {
            Ok(n) => n,
            Err(skipped) => {
                self.events = events;
                return Some(format!("{skipped}: not written"));
            }
        };
        // After an error the writer drops the rest of the segment (it
        // reports it incomplete); the first error says why.
        let mut failure = None;
        for e in events.drain(..) {
            if let Event::Config(c) = &e {
                self.config = Some(c.clone());
            }
            if let Err(err) = self.tree.handle(&e) {
                failure.get_or_insert(err);
            }
        }
        self.events = events;
        if let Some(e) = failure {
            return Some(format!("segment {seq} not written: {e}"));
        }
        self.config_ids.insert(seq, s.config_id);
        let Some(cfg) = self.config.clone() else {
            return Some(format!("segment {seq}: no codec config"));
        };
        let mut cfg = CodecConfig::clone(&cfg);
        if let Some((num, den)) = self.frame_rate {
            (cfg.frame_rate_num, cfg.frame_rate_den) = (num, den);
        }
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
            return Some(format!("manifest.mpd not written: {e}"));
        }
        (!self.thinned && received != rec.frame_count).then(|| {
            format!(
                "segment {seq}: {received} of its {} frames received (joined late, or lagged)",
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
        Ok(self.tree.write_playlists(&hls, &hls_ts)?)
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
        let closed = |s: &ManifestState| s.tail.contains("#EXT-X-ENDLIST");
        if self.have_state && closed(&self.hls) && closed(&self.hls_ts) {
            self.tree.write_dash(&own.dash(now_ms()).render())?;
        } else {
            // All three from the segments written (every one on disk).
            self.tree.write_manifests(own, now_ms())?;
        }
        Ok(())
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
