//! The recorder's writer task: takes the sessions' messages at once (it
//! never waits on storage itself), writes objects on at most
//! `--record-concurrency` tasks with retries, and keeps each recording's
//! manifests: a segment enters them (in order) once its objects are
//! written, and the playlists are rewritten after it, one write at a time
//! per recording.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use object_store::path::Path;
use object_store::{Attribute, Attributes, ObjectStore, PutOptions, PutPayload};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::{Msg, RecordConfig, Shared};
use crate::engine::frame::AudioConfig;
use crate::engine::playlist::{HlsFlavour, Manifests, PlaylistType};
use crate::engine::{CodecConfig, SegmentRecord};
use crate::session::now_unix_ns;

/// First back-off between attempts; doubled each time up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// A segment as its playlist entries are rendered: its record, video
/// config (none in an audio-only session) and the session's audio format.
type Entry = (SegmentRecord, Option<CodecConfig>, Option<AudioConfig>);

/// A segment's place in its recording, in sequence order.
enum Slot {
    Writing(Box<Entry>),
    Written(Box<Entry>),
    Lost,
}

/// One session's recording.
struct Recording {
    session_id: String,
    manifests: Manifests,
    /// Which playlists, as the segments' objects show.
    formats: Formats,
    order: VecDeque<Slot>,
    /// A segment was lost since the last one listed: the next one listed
    /// follows a discontinuity.
    gap: bool,
    /// Discontinuities the recording added (for lost segments).
    added_discontinuities: u64,
    ended: bool,
    /// A playlist write is in flight.
    writing_playlists: bool,
    /// The manifests changed since the playlists were last written.
    dirty: bool,
    /// The final playlists were handed to a write.
    finished: bool,
}

/// The playlists a recording has.
#[derive(Clone, Copy, Default)]
struct Formats {
    /// CMAF video (`seg-N.m4s`).
    cmaf: bool,
    /// CMAF audio (`audio-N.m4s`).
    audio: bool,
    /// MPEG-TS (`ts/seg-N.ts`).
    ts: bool,
}

enum Job {
    Segment {
        rec: u64,
        sequence: u64,
        objects: Vec<(String, Vec<Bytes>)>,
        bytes: usize,
    },
    Playlists {
        rec: u64,
        objects: Vec<(String, Vec<Bytes>)>,
        last: bool,
    },
}

enum Done {
    Segment { rec: u64, sequence: u64, ok: bool },
    Playlists { rec: u64, last: bool },
}

pub(super) struct Writer {
    store: Arc<dyn ObjectStore>,
    prefix: String,
    /// Objects get a `Content-Type` (S3; local files have none).
    content_types: bool,
    retries: u32,
    concurrency: usize,
    max_segments: usize,
    shared: Arc<Shared>,
    rx: mpsc::UnboundedReceiver<Msg>,
    recordings: HashMap<u64, Recording>,
    /// Jobs waiting for a free slot (their bytes are counted as queued).
    waiting: VecDeque<Job>,
    running: JoinSet<Done>,
}

impl Writer {
    pub(super) fn new(
        store: Arc<dyn ObjectStore>,
        prefix: String,
        content_types: bool,
        config: &RecordConfig,
        shared: Arc<Shared>,
        rx: mpsc::UnboundedReceiver<Msg>,
    ) -> Self {
        Self {
            store,
            prefix,
            content_types,
            retries: config.record_retries,
            concurrency: config.record_concurrency,
            max_segments: config.record_max_segments,
            shared,
            rx,
            recordings: HashMap::new(),
            waiting: VecDeque::new(),
            running: JoinSet::new(),
        }
    }

    fn key(&self, session_id: &str, name: &str) -> Path {
        super::key(&self.prefix, session_id, name)
    }

    fn take(&mut self, msg: Msg) {
        match msg {
            Msg::Begin {
                rec,
                session_id,
                manifests,
            } => {
                tracing::info!(session_id, "recording");
                self.recordings.insert(
                    rec,
                    Recording {
                        session_id,
                        manifests: *manifests,
                        formats: Formats::default(),
                        order: VecDeque::new(),
                        gap: false,
                        added_discontinuities: 0,
                        ended: false,
                        writing_playlists: false,
                        dirty: false,
                        finished: false,
                    },
                );
            }
            Msg::Segment {
                rec,
                record,
                cfg,
                audio,
                objects,
                bytes,
            } => {
                let Some(r) = self.recordings.get_mut(&rec) else {
                    self.release(bytes);
                    return;
                };
                let sequence = record.sequence;
                if r.manifests.segments().count() + r.order.len() >= self.max_segments {
                    self.shared
                        .stats
                        .dropped_max_segments
                        .fetch_add(1, Ordering::Relaxed);
                    ::metrics::counter!(crate::metrics::RECORD_LOST, "reason" => "max_segments")
                        .increment(1);
                    self.shared.lost(&r.session_id);
                    r.order.push_back(Slot::Lost);
                    self.release(bytes);
                    self.advance(rec);
                    return;
                }
                for (name, _) in &objects {
                    if name.ends_with(".ts") {
                        r.formats.ts = true;
                    } else if name.starts_with("audio-") && name.ends_with(".m4s") {
                        r.formats.audio = true;
                    } else if name.ends_with(".m4s") {
                        r.formats.cmaf = true;
                    }
                }
                r.order
                    .push_back(Slot::Writing(Box::new((*record, cfg, audio))));
                self.waiting.push_back(Job::Segment {
                    rec,
                    sequence,
                    objects,
                    bytes,
                });
            }
            Msg::Lost { rec } => {
                if let Some(r) = self.recordings.get_mut(&rec) {
                    r.order.push_back(Slot::Lost);
                }
                self.advance(rec);
            }
            Msg::End { rec } => {
                if let Some(r) = self.recordings.get_mut(&rec) {
                    r.ended = true;
                }
                self.advance(rec);
            }
        }
    }

    fn release(&self, bytes: usize) {
        let _ =
            self.shared
                .stats
                .queued_bytes
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |q| {
                    Some(q.saturating_sub(bytes))
                });
    }

    fn finish(&mut self, done: Done) {
        match done {
            Done::Segment { rec, sequence, ok } => {
                if let Some(r) = self.recordings.get_mut(&rec) {
                    r.settle(sequence, ok);
                    if !ok {
                        self.shared
                            .stats
                            .lost_write_failed
                            .fetch_add(1, Ordering::Relaxed);
                        ::metrics::counter!(crate::metrics::RECORD_LOST, "reason" => "write_failed")
                            .increment(1);
                        self.shared.lost(&r.session_id);
                    }
                }
                self.advance(rec);
            }
            Done::Playlists { rec, last } => {
                if last {
                    if let Some(r) = self.recordings.remove(&rec) {
                        tracing::info!(session_id = r.session_id, "recording complete");
                    }
                    self.shared.open.fetch_sub(1, Ordering::Relaxed);
                    return;
                }
                if let Some(r) = self.recordings.get_mut(&rec) {
                    r.writing_playlists = false;
                }
                self.advance(rec);
            }
        }
    }

    /// Lists the segments written in order, and queues a playlist write
    /// when they changed (or the final one, once everything is settled).
    fn advance(&mut self, rec: u64) {
        let Some(r) = self.recordings.get_mut(&rec) else {
            return;
        };
        r.list_settled();
        if r.writing_playlists || r.finished {
            return;
        }
        let last = r.ended && r.order.is_empty();
        if !r.dirty && !last {
            return;
        }
        r.dirty = false;
        r.writing_playlists = true;
        r.finished = last;
        if last {
            r.manifests.end(now_unix_ns() / 1_000_000);
        }
        let objects = r.playlists(last);
        if objects.is_empty() {
            // Nothing was ever recorded: nothing to list.
            if last {
                self.recordings.remove(&rec);
                self.shared.open.fetch_sub(1, Ordering::Relaxed);
            } else {
                r.writing_playlists = false;
            }
            return;
        }
        self.waiting
            .push_back(Job::Playlists { rec, objects, last });
    }

    /// Starts waiting jobs while there is room.
    fn start_jobs(&mut self) {
        while self.running.len() < self.concurrency {
            let Some(job) = self.waiting.pop_front() else {
                return;
            };
            let rec = match &job {
                Job::Segment { rec, .. } | Job::Playlists { rec, .. } => *rec,
            };
            let session_id = self
                .recordings
                .get(&rec)
                .map(|r| r.session_id.clone())
                .unwrap_or_default();
            let keyed = |objects: Vec<(String, Vec<Bytes>)>| -> Vec<(Path, PutPayload)> {
                objects
                    .into_iter()
                    .map(|(name, pieces)| {
                        (
                            self.key(&session_id, &name),
                            pieces.into_iter().collect::<PutPayload>(),
                        )
                    })
                    .collect()
            };
            let store = self.store.clone();
            let shared = self.shared.clone();
            let retries = self.retries;
            let typed = self.content_types;
            match job {
                Job::Segment {
                    rec,
                    sequence,
                    objects,
                    bytes,
                } => {
                    let objects = keyed(objects);
                    self.running.spawn(async move {
                        let mut ok = true;
                        for (path, payload) in objects {
                            if put(
                                &*store,
                                &path,
                                payload,
                                typed,
                                retries,
                                &shared,
                                &session_id,
                            )
                            .await
                            .is_err()
                            {
                                ok = false;
                                break;
                            }
                        }
                        let _ = shared.stats.queued_bytes.fetch_update(
                            Ordering::AcqRel,
                            Ordering::Acquire,
                            |q| Some(q.saturating_sub(bytes)),
                        );
                        Done::Segment { rec, sequence, ok }
                    });
                }
                Job::Playlists { rec, objects, last } => {
                    let objects = keyed(objects);
                    self.running.spawn(async move {
                        for (path, payload) in objects {
                            // A playlist that fails is rewritten with the
                            // next segment (the final ones are not).
                            let _ = put(
                                &*store,
                                &path,
                                payload,
                                typed,
                                retries,
                                &shared,
                                &session_id,
                            )
                            .await;
                        }
                        Done::Playlists { rec, last }
                    });
                }
            }
        }
    }
}

impl Recording {
    /// The segment `sequence` was written (`ok`) or given up.
    fn settle(&mut self, sequence: u64, ok: bool) {
        let at = self
            .order
            .iter()
            .position(|s| matches!(s, Slot::Writing(b) if b.0.sequence == sequence));
        if let Some(i) = at {
            if let (true, Slot::Writing(b)) =
                (ok, std::mem::replace(&mut self.order[i], Slot::Lost))
            {
                self.order[i] = Slot::Written(b);
            }
        }
    }

    /// Lists the segments at the front that are written, in order; a lost
    /// one leaves a discontinuity before the next.
    fn list_settled(&mut self) {
        while let Some(front) = self.order.front() {
            if matches!(front, Slot::Writing(_)) {
                return;
            }
            match self.order.pop_front() {
                Some(Slot::Written(b)) => {
                    let (mut record, cfg, audio) = *b;
                    if self.gap && !record.discontinuity {
                        record.discontinuity = true;
                        self.added_discontinuities += 1;
                    }
                    self.gap = false;
                    record.discontinuity_sequence += self.added_discontinuities;
                    self.manifests.push_av(
                        record,
                        cfg.as_ref(),
                        audio.as_ref(),
                        now_unix_ns() / 1_000_000,
                    );
                    self.dirty = true;
                }
                Some(Slot::Lost) => self.gap = true,
                _ => {}
            }
        }
    }

    /// The playlists as of now (none before the first segment listed):
    /// EVENT ones, and once `last` the VOD ones and the static MPD.
    fn playlists(&self, last: bool) -> Vec<(String, Vec<Bytes>)> {
        let m = &self.manifests;
        if m.segments().next().is_none() {
            return Vec::new();
        }
        let text = |t: String| vec![Bytes::from(t)];
        let mut out = Vec::new();
        let Formats { cmaf, audio, ts } = self.formats;
        if ts {
            out.push((
                "ts/index.m3u8".to_owned(),
                text(m.hls_typed(HlsFlavour::Ts, PlaylistType::Event)),
            ));
            if audio {
                if let Some(master) = m.hls_multivariant(true) {
                    out.push(("ts/master.m3u8".to_owned(), text(master)));
                }
            }
        }
        if cmaf {
            out.push((
                "index.m3u8".to_owned(),
                text(m.hls_typed(HlsFlavour::Cmaf, PlaylistType::Event)),
            ));
        }
        if audio {
            let event = m.hls_typed(HlsFlavour::Audio, PlaylistType::Event);
            if !cmaf {
                // Audio only: index.m3u8 is the audio playlist, as live.
                out.push(("index.m3u8".to_owned(), text(event.clone())));
            }
            out.push(("audio.m3u8".to_owned(), text(event)));
            if let Some(master) = m.hls_multivariant(false) {
                out.push(("master.m3u8".to_owned(), text(master)));
            }
        }
        if last {
            if ts {
                out.push((
                    "ts/vod.m3u8".to_owned(),
                    text(m.hls_typed(HlsFlavour::Ts, PlaylistType::Vod)),
                ));
            }
            if cmaf {
                out.push((
                    "vod.m3u8".to_owned(),
                    text(m.hls_typed(HlsFlavour::Cmaf, PlaylistType::Vod)),
                ));
            }
            if audio {
                out.push((
                    "audio-vod.m3u8".to_owned(),
                    text(m.hls_typed(HlsFlavour::Audio, PlaylistType::Vod)),
                ));
                // The VOD playlists with the audio rendition.
                let video = if cmaf { "vod.m3u8" } else { "audio-vod.m3u8" };
                if let Some(master) = m.hls_multivariant_naming(false, video, "audio-vod.m3u8") {
                    out.push(("vod-master.m3u8".to_owned(), text(master)));
                }
            }
            if cmaf || audio {
                out.push((
                    "manifest.mpd".to_owned(),
                    text(m.dash(now_unix_ns() / 1_000_000).render()),
                ));
            }
        }
        out
    }
}

/// Whether a recorded object is of the CMAF audio track (`audio-*`).
fn is_audio(path: &Path) -> bool {
    path.filename().is_some_and(|f| f.starts_with("audio-"))
}

/// The `Content-Type` of a recorded object, by its extension.
pub(crate) fn content_type(path: &Path) -> &'static str {
    match path.extension() {
        Some("m3u8") => "application/vnd.apple.mpegurl",
        Some("mpd") => "application/dash+xml",
        Some("ts") => "video/mp2t",
        Some("m4s") if is_audio(path) => "audio/iso.segment",
        Some("m4s") => "video/iso.segment",
        _ if is_audio(path) => "audio/mp4",
        _ => "video/mp4",
    }
}

/// `Some(what to do)` when a failed write cannot succeed by trying again:
/// the bucket or path does not exist, the credentials are refused, the
/// store does not take such a write. Those are not retried (each retry
/// would hold a writer slot for seconds while the queue fills); a store
/// that is unreachable, slow or failing (`Generic`: connection errors,
/// 5xx after `object_store`'s own retries) may come back and is.
pub(super) fn permanent_error_hint(e: &object_store::Error) -> Option<&'static str> {
    use object_store::Error as E;
    match e {
        E::NotFound { .. } => {
            Some("the bucket or path does not exist: create the bucket or fix --record")
        }
        E::PermissionDenied { .. } | E::Unauthenticated { .. } => Some(
            "the store refused the credentials: check AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY \
             (or the instance role) and the bucket's policy",
        ),
        E::InvalidPath { .. } => Some("the object path is invalid: fix the --record prefix"),
        E::NotSupported { .. }
        | E::NotImplemented { .. }
        | E::UnknownConfigurationKey { .. }
        | E::AlreadyExists { .. }
        | E::Precondition { .. } => Some("the store does not take this write: check --record"),
        _ => None,
    }
}

/// Writes one object, retrying with exponential back-off; counts and logs.
/// Errors retrying cannot mend ([`permanent_error_hint`]) fail at once.
async fn put(
    store: &dyn ObjectStore,
    path: &Path,
    payload: PutPayload,
    typed: bool,
    retries: u32,
    shared: &Shared,
    session_id: &str,
) -> Result<(), object_store::Error> {
    let len = payload.content_length();
    let mut backoff = FIRST_BACKOFF;
    let mut attempt = 0;
    loop {
        let mut opts = PutOptions::default();
        if typed {
            opts.attributes = Attributes::from_iter([(Attribute::ContentType, content_type(path))]);
        }
        match store.put_opts(path, payload.clone(), opts).await {
            Ok(_) => {
                shared.stats.writes.fetch_add(1, Ordering::Relaxed);
                shared.stats.bytes.fetch_add(len as u64, Ordering::Relaxed);
                ::metrics::counter!(crate::metrics::RECORD_WRITES).increment(1);
                ::metrics::counter!(crate::metrics::RECORD_BYTES).increment(len as u64);
                return Ok(());
            }
            Err(e) => {
                let hint = permanent_error_hint(&e);
                // One line: an S3 error's XML body may carry newlines.
                let error = e.to_string().replace('\n', " ");
                let text = match hint {
                    Some(h) => format!("{path}: {error} (not retried: {h})"),
                    None => format!("{path}: {error}"),
                };
                let at_ms = crate::session::now_unix_ns() / 1_000_000;
                *shared.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some((text, at_ms));
                if attempt >= retries || hint.is_some() {
                    shared.stats.failures.fetch_add(1, Ordering::Relaxed);
                    ::metrics::counter!(crate::metrics::RECORD_FAILURES).increment(1);
                    tracing::warn!(session_id, object = %path, attempts = attempt + 1, error = %error,
                        hint = hint.unwrap_or("the store is unreachable or failing"),
                        "recording: write failed; giving up");
                    return Err(e);
                }
                attempt += 1;
                shared.stats.retries.fetch_add(1, Ordering::Relaxed);
                ::metrics::counter!(crate::metrics::RECORD_RETRIES).increment(1);
                tracing::debug!(session_id, object = %path, attempt, error = %error,
                    "recording: write failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

pub(super) async fn run(mut w: Writer) {
    loop {
        w.start_jobs();
        tokio::select! {
            msg = w.rx.recv() => match msg {
                Some(m) => w.take(m),
                // Every handle is gone (the server stopped): finish what
                // is running.
                None => break,
            },
            Some(done) = w.running.join_next(), if !w.running.is_empty() => {
                if let Ok(d) = done {
                    w.finish(d);
                }
            }
        }
    }
    while let Some(done) = w.running.join_next().await {
        if let Ok(d) = done {
            w.finish(d);
        }
        w.start_jobs();
    }
}
