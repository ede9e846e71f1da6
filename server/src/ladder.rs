//! `--ladder`: a transcode ladder for every published session. One ffmpeg
//! child process per session decodes the source's accepted frames (fed on
//! its stdin as MPEG-TS from the engine's muxer, each frame with its
//! timeline PTS/DTS) and encodes each rung with libx264, keyframes forced
//! where the source has them (`-force_key_frames source`) and none of its
//! own (`keyint=infinite`, no scene cuts), no B-frames (`-tune
//! zerolatency`), writing MPEG-TS with the input's timestamps (`-copyts`,
//! `-mpegts_copyts`) to one loopback TCP connection per rung. Each rung
//! picture's PTS names the source picture it encodes, so a picture ffmpeg
//! drops cannot shift the others; it is published back into the session as
//! rendition `SESSION~NAME` (see [`crate::session::renditions`]) with that
//! source picture's capture time (or, for a source without capture times,
//! the instant it is at on the source's timeline:
//! [`Session::push_placed`]), so the rung joins the source's timeline with
//! its segments aligned however long ffmpeg takes.
//!
//! ffmpeg is a separate process (found on PATH, or `--ladder-ffmpeg`), so
//! a crash or a slow encode never touches the source: the ladder reads the
//! source as a subscriber does (a slow one is moved on, and says so), its
//! renditions end with an error, the source goes on. The process is killed
//! when the source session ends (after it flushes, at most
//! [`FLUSH_LIMIT`]), or when the ladder fails; its CPU is bounded by
//! `-threads` (`--ladder-threads`) for the decoder and for each rung.
//!
//! Hand-written rather than a crate: the work is running ffmpeg and moving
//! bytes (tokio's process and TCP); the rungs' MPEG-TS is read with the
//! `mpeg2ts` crate (which hands over a PES packet when the next one starts:
//! one frame, about 33 ms, of the latency the ladder adds).

use std::collections::{BTreeMap, VecDeque};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::engine::mux::ts::{TsMuxer, TS_TIME_OFFSET};
use crate::engine::CodecConfig;
use crate::session::registry::Registry;
use crate::session::{EndReason, Session, SessionItem};

/// How long ffmpeg may take to finish after the source ends.
pub const FLUSH_LIMIT: Duration = Duration::from_secs(10);

/// Source frames (in presentation order) held for rungs that have not
/// output them yet: about 30 s at 30 fps. A ladder further behind than
/// this is too slow for live and is stopped.
const MAX_PENDING: usize = 1024;

/// One rung: its rendition name (`720p`), height (pixels; the width keeps
/// the aspect ratio, rounded to even) and target bit rate (kbit/s).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rung {
    pub name: String,
    pub height: u32,
    pub kbps: u32,
}

/// Parses `720p:3000k,480p:1200k,360p:600k` (height `p`, bit rate in
/// `k`bit/s or `M`bit/s).
pub fn parse_ladder(s: &str) -> Result<Vec<Rung>, String> {
    let mut rungs: Vec<Rung> = Vec::new();
    for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let (res, rate) = item
            .split_once(':')
            .ok_or_else(|| format!("{item:?}: a rung is HEIGHTp:RATE, like 480p:1200k"))?;
        let height: u32 = res
            .strip_suffix('p')
            .and_then(|h| h.parse().ok())
            .filter(|h| (16..=4320).contains(h) && h % 2 == 0)
            .ok_or_else(|| {
                format!("{item:?}: {res:?} is not a height like 480p (even, 16p to 4320p)")
            })?;
        let kbps = if let Some(k) = rate.strip_suffix(['k', 'K']) {
            k.parse::<u32>().ok()
        } else if let Some(m) = rate.strip_suffix(['m', 'M']) {
            m.parse::<u32>().ok().and_then(|m| m.checked_mul(1000))
        } else {
            None
        }
        .filter(|k| (16..=200_000).contains(k))
        .ok_or_else(|| {
            format!("{item:?}: {rate:?} is not a bit rate like 1200k or 3M (16k to 200M)")
        })?;
        let name = format!("{height}p");
        if rungs.iter().any(|r| r.name == name) {
            return Err(format!("{item:?}: {name} is in the ladder twice"));
        }
        rungs.push(Rung { name, height, kbps });
    }
    if rungs.is_empty() {
        return Err("the ladder is empty (for example 720p:3000k,480p:1200k)".into());
    }
    Ok(rungs)
}

/// The ladder's part of the configuration (`ladder*` keys). Without
/// `ladder` no ladder runs.
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct LadderConfig {
    /// Rungs, `HEIGHTp:RATE` comma-separated (`720p:3000k,480p:1200k`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ladder: Option<String>,
    /// The ffmpeg binary (with libx264).
    pub ladder_ffmpeg: String,
    /// Encoder threads per rung.
    pub ladder_threads: u32,
}

impl Default for LadderConfig {
    fn default() -> Self {
        Self {
            ladder: None,
            ladder_ffmpeg: "ffmpeg".into(),
            ladder_threads: 1,
        }
    }
}

impl LadderConfig {
    /// Checks the rungs and ranges, naming the bad key.
    pub fn validate(&self) -> Result<(), crate::config::ConfigError> {
        if let Some(l) = &self.ladder {
            parse_ladder(l).map_err(|e| crate::config::ConfigError::new("ladder", &e))?;
        }
        if !(1..=16).contains(&self.ladder_threads) {
            return Err(crate::config::ConfigError::new(
                "ladder-threads",
                "must be 1 to 16",
            ));
        }
        Ok(())
    }

    /// The ladder to run, if one is configured.
    pub fn ladder(&self) -> Result<Option<Ladder>, String> {
        let Some(spec) = &self.ladder else {
            return Ok(None);
        };
        Ok(Some(Ladder {
            rungs: parse_ladder(spec)?,
            ffmpeg: self.ladder_ffmpeg.clone(),
            threads: self.ladder_threads,
        }))
    }
}

/// The ladder a server runs for every session published to it.
#[derive(Debug)]
pub struct Ladder {
    pub rungs: Vec<Rung>,
    /// The ffmpeg binary.
    pub ffmpeg: String,
    /// Encoder threads per rung.
    pub threads: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum LadderError {
    #[error("cannot run {0:?}: {1} (the ladder needs ffmpeg with libx264: apt-get install ffmpeg, or --ladder-ffmpeg PATH)")]
    Spawn(String, std::io::Error),
    #[error("{0:?} does not list libx264 among its encoders ({0} -hide_banner -encoders): the ladder needs an ffmpeg with libx264 (Debian's ffmpeg package has it; or --ladder-ffmpeg PATH)")]
    NoLibx264(String),
    #[error("ffmpeg did not connect its output for rung {0} within 10 s")]
    NoOutput(String),
    #[error("ffmpeg failed ({status}): {stderr}")]
    Failed { status: String, stderr: String },
    #[error("the ladder fell {0} frames behind the source: too slow for live (fewer rungs, lower resolutions, or more --ladder-threads)")]
    TooSlow(usize),
    #[error("the source skipped {0} items ahead of the ladder (it read too slowly)")]
    Lagged(u64),
    #[error("rendition {0}: {1}")]
    Publish(String, String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

impl Ladder {
    /// Checks that ffmpeg runs (at startup: a missing one is an error
    /// then, not at the first session).
    pub fn check(&self) -> Result<(), LadderError> {
        let out = std::process::Command::new(&self.ffmpeg)
            .args(["-hide_banner", "-encoders"])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| LadderError::Spawn(self.ffmpeg.clone(), e))?;
        if !String::from_utf8_lossy(&out.stdout).contains("libx264") {
            return Err(LadderError::NoLibx264(self.ffmpeg.clone()));
        }
        Ok(())
    }

    /// Starts the ladder of `source` (a session just published, not a
    /// rendition) on its own task.
    pub fn start(self: &Arc<Self>, registry: Arc<Registry>, source: Arc<Session>) {
        let ladder = self.clone();
        tokio::spawn(async move {
            let id = source.id.clone();
            if let Err(e) = ladder.run(&registry, &source).await {
                if source.end_reason() == Some(EndReason::ServerShutdown) {
                    // (ffmpeg's output had nowhere to go.)
                    tracing::debug!(session_id = %id, error = %e, "transcode ladder stopped with the server");
                    return;
                }
                ::metrics::counter!(crate::metrics::LADDER_FAILURES).increment(1);
                tracing::warn!(session_id = %id, error = %e, "transcode ladder failed; the source goes on");
            }
        });
    }

    /// The ffmpeg command line: MPEG-TS on stdin (the source's frames with
    /// their timestamps), each rung as MPEG-TS to its `ports` entry with
    /// the same timestamps (`-copyts`, the demuxer's time base, no mux
    /// delay), so each output picture names the source picture it encodes.
    fn command(&self, rungs: &[&Rung], ports: &[u16]) -> tokio::process::Command {
        let threads = self.threads.to_string();
        let mut c = tokio::process::Command::new(&self.ffmpeg);
        // No probing ahead (by default ffmpeg reads 5 MB or 5 s of input
        // before it starts: seconds of a live source).
        c.args(["-hide_banner", "-loglevel", "error"])
            .args(["-probesize", "32768", "-analyzeduration", "100000"])
            .args([
                "-copyts", "-threads", &threads, "-f", "mpegts", "-i", "pipe:0",
            ]);
        for (r, port) in rungs.iter().zip(ports) {
            c.args(["-map", "0:v:0", "-vf", &format!("scale=-2:{}", r.height)])
                .args([
                    "-c:v",
                    "libx264",
                    "-preset",
                    "veryfast",
                    "-tune",
                    "zerolatency",
                ])
                .args(["-b:v", &format!("{}k", r.kbps)])
                .args(["-maxrate", &format!("{}k", r.kbps)])
                .args(["-bufsize", &format!("{}k", r.kbps * 2)])
                .args(["-force_key_frames", "source", "-sc_threshold", "0"])
                .args([
                    "-x264-params",
                    "keyint=infinite:scenecut=0:repeat-headers=1",
                ])
                .args(["-threads", &threads])
                .args(["-enc_time_base:v", "-1", "-fps_mode", "passthrough"])
                .args(["-mpegts_copyts", "1", "-muxdelay", "0", "-muxpreload", "0"])
                .args(["-flush_packets", "1", "-f", "mpegts"])
                .arg(format!("tcp://127.0.0.1:{port}"));
        }
        c.stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .process_group(0);
        c
    }

    async fn run(
        &self,
        registry: &Arc<Registry>,
        source: &Arc<Session>,
    ) -> Result<(), LadderError> {
        let (snapshot, mut sub, _guard) = source.join(true);
        let mut configs = Configs::default();
        if let Some(c) = snapshot.config {
            configs.add(c);
        }
        let mut items = Vec::new();
        // The first keyframe (and the frame rate, known by then).
        let mut first: Option<Arc<crate::engine::Frame>> = None;
        while first.is_none() {
            items.clear();
            if let crate::session::log::Read::Lagged { skipped } =
                source.read(&mut sub, &mut items, 256)
            {
                tracing::debug!(skipped, "ladder: moved on before starting");
            }
            for it in items.drain(..) {
                match it {
                    SessionItem::Frame(f) if f.random_access && first.is_none() => first = Some(f),
                    SessionItem::Config(c) => configs.add(c),
                    SessionItem::Ended(_) => return Ok(()),
                    _ => {}
                }
            }
            if first.is_none() && sub.wake.changed().await.is_err() {
                return Ok(());
            }
        }
        let Some(first) = first else {
            return Ok(());
        };
        // A ladder only goes down: rungs as tall as the source or taller
        // are left out (an upscale adds bytes, not picture).
        let height = configs
            .0
            .get(&first.config_id)
            .map_or(u32::MAX, |c| c.height);
        let (rungs, taller): (Vec<&Rung>, Vec<&Rung>) =
            self.rungs.iter().partition(|r| r.height < height);
        if !taller.is_empty() {
            let names: Vec<&str> = taller.iter().map(|r| r.name.as_str()).collect();
            tracing::warn!(
                session_id = %source.id,
                source_height = height,
                left_out = %names.join(","),
                "ladder rungs as tall as the source or taller are left out"
            );
        }
        if rungs.is_empty() {
            return Ok(());
        }

        let mut listeners = Vec::new();
        let mut ports = Vec::new();
        for _ in &rungs {
            let l = TcpListener::bind("127.0.0.1:0").await?;
            ports.push(l.local_addr()?.port());
            listeners.push(l);
        }
        let mut child = self
            .command(&rungs, &ports)
            .spawn()
            .map_err(|e| LadderError::Spawn(self.ffmpeg.clone(), e))?;
        let mut stdin = child
            .stdin
            .take()
            .ok_or_else(|| std::io::Error::other("no stdin"))?;
        let mut stderr = child
            .stderr
            .take()
            .ok_or_else(|| std::io::Error::other("no stderr"))?;
        let stderr_task = tokio::spawn(async move {
            // The last 4 KiB: what to report if it fails.
            let mut tail = VecDeque::new();
            let mut buf = [0u8; 1024];
            while let Ok(n) = stderr.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                tail.extend(&buf[..n]);
                while tail.len() > 4096 {
                    tail.pop_front();
                }
            }
            String::from_utf8_lossy(&tail.into_iter().collect::<Vec<u8>>())
                .trim()
                .to_string()
        });

        let captures = Arc::new(Mutex::new(Captures::new(rungs.len())));
        // Each rung: accept ffmpeg's connection, publish what it sends.
        let mut tasks = Vec::new();
        for (i, (r, l)) in rungs.iter().zip(listeners).enumerate() {
            let published = crate::ids::rendition_id(&source.id, &r.name)
                .and_then(|id| {
                    registry
                        .publish(&id, source.options.clone())
                        .map_err(|e| e.to_string())
                })
                .map_err(|e| LadderError::Publish(r.name.clone(), e));
            let grant = match published {
                Ok(g) => g,
                Err(e) => {
                    let _ = child.start_kill();
                    return Err(e);
                }
            };
            let captures = captures.clone();
            let session = grant.session.clone();
            let task = tokio::spawn(async move {
                publish_rung(l, grant.session.clone(), grant.generation, i, captures).await
            });
            tasks.push((r.name.clone(), session, task));
        }

        // Feed the source's frames until it ends; then ffmpeg flushes.
        let mut fed = feed(source, &mut sub, &mut stdin, &captures, &mut configs, first).await;
        drop(stdin);
        // A broken pipe is ffmpeg gone: what it exited with says why.
        let gone =
            matches!(&fed, Err(LadderError::Io(e)) if e.kind() == std::io::ErrorKind::BrokenPipe);
        if fed.is_err() && !gone {
            let _ = child.start_kill();
        }
        let status = match tokio::time::timeout(FLUSH_LIMIT, child.wait()).await {
            Ok(s) => s.ok(),
            Err(_) => {
                let _ = child.start_kill();
                let _ = child.wait().await;
                None
            }
        };
        let stderr = stderr_task.await.unwrap_or_default();
        if fed.is_ok() || gone {
            if let Some(s) = status.filter(|s| !s.success()) {
                fed = Err(LadderError::Failed {
                    status: s.to_string(),
                    stderr,
                });
            }
        }
        for (name, session, task) in tasks {
            let out = match task.await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(LadderError::NoOutput(_))) => Err(LadderError::NoOutput(name)),
                Ok(Err(e)) => Err(e),
                Err(e) => Err(LadderError::Io(std::io::Error::other(e.to_string()))),
            };
            let (reason, detail) = match (&fed, &out) {
                (Ok(()), Ok(())) => (EndReason::EndOfStream, "the source ended".to_string()),
                (Err(e), _) | (_, Err(e)) => (EndReason::Error, format!("transcode ladder: {e}")),
            };
            registry.end(&session, reason, detail);
            if fed.is_ok() {
                fed = out;
            }
        }
        fed
    }
}

/// The source's codec configurations by id, for muxing its frames.
#[derive(Default)]
struct Configs(BTreeMap<u32, Arc<CodecConfig>>);

impl Configs {
    fn add(&mut self, c: Arc<CodecConfig>) {
        self.0.insert(c.id, c);
        while self.0.len() > 16 {
            self.0.pop_first();
        }
    }
}

/// Feeds the source's frames (from `first`) to ffmpeg as MPEG-TS until the
/// source ends, noting where each one is on the source's timeline.
async fn feed(
    source: &Session,
    sub: &mut crate::session::Subscription,
    stdin: &mut tokio::process::ChildStdin,
    captures: &Mutex<Captures>,
    configs: &mut Configs,
    first: Arc<crate::engine::Frame>,
) -> Result<(), LadderError> {
    let mut items = Vec::new();
    let mut frames = vec![first];
    let mut ts = TsMuxer::new();
    // Timeline time 0 on the wall clock (ns): known once a frame is out.
    let start_ns = source
        .info()
        .availability_start_ms
        .saturating_mul(1_000_000);
    loop {
        let mut ended = false;
        for it in items.drain(..) {
            match it {
                SessionItem::Frame(f) => frames.push(f),
                SessionItem::Config(c) => configs.add(c),
                SessionItem::Ended(_) => ended = true,
                _ => {}
            }
        }
        for f in frames.drain(..) {
            let Some(cfg) = configs.0.get(&f.config_id) else {
                continue; // (not for want of a config the source had)
            };
            let Ok(bytes) = ts.part(&[&f], cfg, true) else {
                continue;
            };
            captures.lock().unwrap_or_else(|p| p.into_inner()).fed(
                f.pts.saturating_add(TS_TIME_OFFSET),
                Placed {
                    capture: f.capture_time_ns,
                    arrival: start_ns.saturating_add(f.dts.saturating_mul(100_000) / 9),
                },
            )?;
            stdin.write_all(&bytes).await?;
        }
        if ended {
            return Ok(());
        }
        if let crate::session::log::Read::Lagged { skipped } = source.read(sub, &mut items, 256) {
            return Err(LadderError::Lagged(skipped));
        }
        if items.is_empty() && sub.wake.changed().await.is_err() {
            return Ok(());
        }
    }
}

/// Where a source picture is on the source's timeline, for the rung
/// pictures that encode it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Placed {
    /// The publisher's capture time (ns), if it sent one.
    capture: Option<u64>,
    /// The wall clock (Unix ns) of its decode time on the source's
    /// timeline: availability start + decode time. A rung without capture
    /// times joins by this, as if it had arrived with the source.
    arrival: u64,
}

/// The source pictures sent to ffmpeg and not yet output by every rung,
/// by their MPEG-TS presentation time (90 kHz, not wrapped), which ffmpeg
/// hands back on each rung's picture (`-copyts`): a picture ffmpeg drops
/// or cannot decode is simply not found, never mistaken for the next.
struct Captures {
    fed: BTreeMap<u64, Placed>,
    /// The presentation time each rung last output.
    taken: Vec<Option<u64>>,
}

/// MPEG-TS timestamps are 33 bits.
const WRAP: u64 = 1 << 33;

impl Captures {
    fn new(rungs: usize) -> Self {
        Self {
            fed: BTreeMap::new(),
            taken: vec![None; rungs],
        }
    }

    /// A source picture (MPEG-TS presentation time `pts`) went to ffmpeg.
    fn fed(&mut self, pts: u64, placed: Placed) -> Result<(), LadderError> {
        self.fed.insert(pts, placed);
        if self.fed.len() > MAX_PENDING {
            return Err(LadderError::TooSlow(self.fed.len()));
        }
        Ok(())
    }

    /// Rung `rung` output the picture of (33-bit) presentation time
    /// `pts`: where the source picture of that time (within half a frame
    /// at 60 fps) is on the source's timeline. Forgets what every rung has
    /// passed.
    fn take(&mut self, rung: usize, pts: u64) -> Option<Placed> {
        // Unwrap against the newest picture fed.
        let newest = self.fed.last_key_value().map_or(0, |(k, _)| *k);
        let back = newest.wrapping_sub(pts) % WRAP;
        let pts = newest.checked_sub(back)?;
        const NEAR: u64 = 750;
        let found = self
            .fed
            .range(pts.saturating_sub(NEAR)..=pts.saturating_add(NEAR))
            .min_by_key(|(k, _)| k.abs_diff(pts))
            .map(|(k, p)| (*k, *p));
        if let Some(t) = self.taken.get_mut(rung) {
            *t = Some(found.map_or(pts, |(k, _)| k));
        }
        if let Some(done) = self.taken.iter().copied().min().flatten() {
            while self.fed.first_key_value().is_some_and(|(k, _)| *k <= done) {
                self.fed.pop_first();
            }
        }
        found.map(|(_, p)| p)
    }
}

/// Accepts ffmpeg's connection for one rung and publishes its pictures
/// (one PES packet each, read with the `mpeg2ts` crate on a blocking
/// thread) into `session`, each placed where the source picture it
/// encodes is.
async fn publish_rung(
    listener: TcpListener,
    session: Arc<Session>,
    generation: u64,
    rung: usize,
    captures: Arc<Mutex<Captures>>,
) -> Result<(), LadderError> {
    let (conn, _) = tokio::time::timeout(Duration::from_secs(10), listener.accept())
        .await
        .map_err(|_| LadderError::NoOutput(String::new()))??;
    drop(listener);
    let conn = conn.into_std()?;
    conn.set_nonblocking(false)?;
    tokio::task::spawn_blocking(move || {
        use mpeg2ts::pes::{PesPacketReader, ReadPesPacket};
        use mpeg2ts::ts::TsPacketReader;
        let mut reader = PesPacketReader::new(TsPacketReader::new(std::io::BufReader::new(conn)));
        loop {
            let pes = match reader.read_pes_packet() {
                Ok(Some(p)) => p,
                Ok(None) => return Ok(()),
                Err(e) => return Err(LadderError::Io(std::io::Error::other(e.to_string()))),
            };
            if !pes.header.stream_id.is_video() {
                continue;
            }
            let placed = pes.header.pts.and_then(|t| {
                captures
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .take(rung, t.as_u64())
            });
            session
                .push_placed(
                    generation,
                    Bytes::from(pes.data),
                    placed.and_then(|p| p.capture),
                    placed.map(|p| p.arrival),
                    true,
                )
                .map_err(|e| std::io::Error::other(e.to_string()))?;
        }
    })
    .await
    .map_err(|e| LadderError::Io(std::io::Error::other(e.to_string())))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ladders_parse_and_bad_ones_say_why() {
        let l = parse_ladder("720p:3000k, 480p:1.2M,360p:600k").unwrap_err();
        assert!(l.contains("1.2M"), "{l}");
        let l = parse_ladder("720p:3000k,480p:1M,360p:600k").unwrap();
        assert_eq!(
            l,
            vec![
                Rung {
                    name: "720p".into(),
                    height: 720,
                    kbps: 3000
                },
                Rung {
                    name: "480p".into(),
                    height: 480,
                    kbps: 1000
                },
                Rung {
                    name: "360p".into(),
                    height: 360,
                    kbps: 600
                },
            ]
        );
        for (bad, why) in [
            ("", "empty"),
            ("720p", "HEIGHTp:RATE"),
            ("721p:100k", "a height like 480p"),
            ("720:100k", "a height like 480p"),
            ("720p:100", "a bit rate like 1200k"),
            ("720p:1k", "bit rate"),
            ("720p:100k,720p:200k", "twice"),
        ] {
            let e = parse_ladder(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    fn at(pts: u64) -> Placed {
        Placed {
            capture: Some(pts * 10),
            arrival: pts * 7,
        }
    }

    #[test]
    fn each_rung_picture_is_placed_by_its_own_timestamp() {
        let mut c = Captures::new(2);
        // Decode order I P B B, 30 fps.
        for pts in [0u64, 9000, 3000, 6000] {
            c.fed(pts, at(pts)).unwrap();
        }
        // Rung 0 outputs all four (a timestamp rounded by a tick still
        // finds its picture); rung 1 drops the first (undecodable).
        assert_eq!(c.take(0, 0), Some(at(0)));
        assert_eq!(c.take(0, 3001), Some(at(3000)));
        assert_eq!(c.take(1, 3000), Some(at(3000)));
        // What both have passed is forgotten; what one still needs is not.
        assert_eq!(c.fed.len(), 2);
        assert_eq!(c.take(1, 6000), Some(at(6000)));
        assert_eq!(c.take(0, 6000), Some(at(6000)));
        assert_eq!(c.fed.len(), 1);
        // A picture nobody fed is found as nothing, not as its neighbour.
        assert_eq!(c.take(0, 7500), None);
        assert_eq!(c.take(0, 9000), Some(at(9000)));
    }

    #[test]
    fn timestamps_that_wrapped_at_33_bits_are_found() {
        let mut c = Captures::new(1);
        let base = WRAP - 3000;
        for pts in [base, base + 3000, base + 6000] {
            c.fed(pts, at(pts)).unwrap();
        }
        assert_eq!(c.take(0, base), Some(at(base)));
        assert_eq!(c.take(0, 0), Some(at(base + 3000)));
        assert_eq!(c.take(0, 3000), Some(at(base + 6000)));
    }

    #[test]
    fn a_ladder_too_far_behind_is_too_slow() {
        let mut c = Captures::new(1);
        let mut err = None;
        for pts in 0..(MAX_PENDING + 2) as u64 {
            if let Err(e) = c.fed(pts * 3000, Placed::default()) {
                err = Some(e);
                break;
            }
        }
        assert!(matches!(err, Some(LadderError::TooSlow(_))), "{err:?}");
    }
}
