//! `--ll-viewers N`: N low-latency HLS players on one live session, as
//! hls.js plays it: each holds a blocking playlist reload for the next part
//! (`_HLS_msn=M&_HLS_part=P`, RFC 8216bis 6.2.5.2), then fetches that part,
//! and so on, for `--duration`; the players share `--held-connections K`
//! prior-knowledge HTTP/2 (h2c) connections, as players behind an HTTP/2
//! CDN edge or browsers that multiplex do. With `--server-pid` it reports
//! the server's CPU time over the run, per viewer and per part served: run
//! it against an origin and against an edge of the same session for what
//! an edge costs per viewer.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::Bytes;

use crate::stats::cpu_seconds;

/// What the run measured.
#[derive(Debug)]
pub struct ViewersReport {
    pub viewers: usize,
    pub connections: usize,
    pub duration: Duration,
    /// Parts fetched (status 200), all viewers.
    pub parts: u64,
    /// Playlist reloads answered (status 200).
    pub playlists: u64,
    /// Media bytes fetched.
    pub bytes: u64,
    /// Requests that failed (any status but 200, or no answer).
    pub errors: u64,
    /// Server CPU seconds over the run (`--server-pid`).
    pub server_cpu: Option<f64>,
}

#[derive(Default)]
struct Counters {
    parts: AtomicU64,
    playlists: AtomicU64,
    bytes: AtomicU64,
    errors: AtomicU64,
}

/// Plays `session` of the origin at `http` (host:port) with `n` viewers on
/// `k` HTTP/2 connections for `duration`.
pub async fn run(
    http: &str,
    session: &str,
    n: usize,
    k: usize,
    duration: Duration,
    server_pid: Option<u32>,
) -> Result<ViewersReport> {
    let k = k.max(1);
    let senders = crate::held::h2_connections(http, k).await?;
    let base = format!("http://{http}/live/{session}/");
    let (status, first) = get(&senders[0], &format!("{base}index.m3u8")).await?;
    if status != 200 {
        bail!("GET {base}index.m3u8: status {status} (is session {session} live on {http}?)");
    }
    let first = Playlist::parse(&String::from_utf8_lossy(&first));
    if first.part_target.is_none() {
        bail!("{base}index.m3u8 lists no parts: publish with low-latency parts (--part-duration)");
    }
    let counters = Arc::new(Counters::default());
    let pid = server_pid.map(|p| p.to_string());
    let cpu_before = pid.as_deref().and_then(cpu_seconds);
    let started = Instant::now();
    let deadline = tokio::time::Instant::now() + duration;
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        let send = senders[i % k].clone();
        let (base, counters) = (base.clone(), counters.clone());
        let (msn, part) = first.next_part();
        tasks.push(tokio::spawn(async move {
            viewer(send, base, msn, part, deadline, counters).await;
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let elapsed = started.elapsed();
    let cpu_after = pid.as_deref().and_then(cpu_seconds);
    Ok(ViewersReport {
        viewers: n,
        connections: k,
        duration: elapsed,
        parts: counters.parts.load(Ordering::Relaxed),
        playlists: counters.playlists.load(Ordering::Relaxed),
        bytes: counters.bytes.load(Ordering::Relaxed),
        errors: counters.errors.load(Ordering::Relaxed),
        server_cpu: cpu_before.zip(cpu_after).map(|(b, a)| a - b),
    })
}

/// One player: blocking reload for (msn, part), then the part, until the
/// deadline.
async fn viewer(
    send: h2::client::SendRequest<Bytes>,
    base: String,
    mut msn: u64,
    mut part: usize,
    deadline: tokio::time::Instant,
    counters: Arc<Counters>,
) {
    while tokio::time::Instant::now() < deadline {
        let url = format!("{base}index.m3u8?_HLS_msn={msn}&_HLS_part={part}");
        let Ok(Ok((status, body))) = tokio::time::timeout_at(deadline, get(&send, &url)).await
        else {
            return;
        };
        if status != 200 {
            counters.errors.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        counters.playlists.fetch_add(1, Ordering::Relaxed);
        let p = Playlist::parse(&String::from_utf8_lossy(&body));
        if p.ended {
            return;
        }
        match p.parts.get(&msn).and_then(|v| v.get(part)) {
            Some(uri) => {
                match get(&send, &format!("{base}{uri}")).await {
                    Ok((200, media)) => {
                        counters.parts.fetch_add(1, Ordering::Relaxed);
                        counters
                            .bytes
                            .fetch_add(media.len() as u64, Ordering::Relaxed);
                    }
                    _ => {
                        counters.errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
                part += 1;
            }
            None => {
                // The part after the last of a completed segment: the next
                // segment's first. Fell behind the listed parts: the live
                // edge.
                (msn, part) = if msn < p.open_segment() && part >= p.parts_of(msn) {
                    (msn + 1, 0)
                } else {
                    p.next_part()
                };
            }
        }
        if msn < p.open_segment() && part >= p.parts_of(msn) && p.parts.contains_key(&msn) {
            (msn, part) = (msn + 1, 0);
        }
    }
}

/// One GET as an HTTP/2 stream: (status, body).
async fn get(send: &h2::client::SendRequest<Bytes>, url: &str) -> Result<(u16, Vec<u8>)> {
    let mut send = send.clone().ready().await.context("HTTP/2 connection")?;
    let req = http::Request::get(url).body(())?;
    let (resp, _) = send.send_request(req, true)?;
    let resp = resp.await?;
    let status = resp.status().as_u16();
    let mut body = resp.into_body();
    let mut buf = Vec::new();
    while let Some(chunk) = body.data().await {
        let c = chunk?;
        let _ = body.flow_control().release_capacity(c.len());
        buf.extend_from_slice(&c);
    }
    Ok((status, buf))
}

/// What a player reads from a low-latency media playlist.
#[derive(Debug, Default)]
struct Playlist {
    media_sequence: u64,
    /// Complete segments listed.
    segments: u64,
    /// `EXT-X-PART` URIs per media sequence number.
    parts: BTreeMap<u64, Vec<String>>,
    part_target: Option<f64>,
    ended: bool,
}

impl Playlist {
    fn parse(text: &str) -> Self {
        let mut p = Playlist::default();
        for l in text.lines() {
            if let Some(v) = l.strip_prefix("#EXT-X-MEDIA-SEQUENCE:") {
                p.media_sequence = v.trim().parse().unwrap_or(0);
            } else if let Some(v) = l.strip_prefix("#EXT-X-PART-INF:PART-TARGET=") {
                p.part_target = v.trim().parse().ok();
            } else if let Some(v) = l.strip_prefix("#EXT-X-PART:") {
                let uri = v
                    .split_once("URI=\"")
                    .and_then(|(_, u)| u.split('"').next())
                    .unwrap_or_default();
                let seq = p.media_sequence + p.segments;
                p.parts.entry(seq).or_default().push(uri.to_string());
            } else if l.starts_with("#EXTINF:") {
                p.segments += 1;
            } else if l == "#EXT-X-ENDLIST" {
                p.ended = true;
            }
        }
        p
    }

    /// The segment in progress.
    fn open_segment(&self) -> u64 {
        self.media_sequence + self.segments
    }

    fn parts_of(&self, msn: u64) -> usize {
        self.parts.get(&msn).map_or(0, Vec::len)
    }

    /// The next part to come: after the last listed one of the segment in
    /// progress.
    fn next_part(&self) -> (u64, usize) {
        let open = self.open_segment();
        (open, self.parts_of(open))
    }
}

impl ViewersReport {
    /// The summary.
    pub fn text(&self) -> String {
        let secs = self.duration.as_secs_f64().max(1e-9);
        let mut s = format!(
            "{} low-latency HLS viewers on {} HTTP/2 connection{}, {:.1} s\n\
             parts fetched: {} ({:.1}/s, {:.2} per viewer per second), {:.1} MB, playlist reloads {}, errors {}\n",
            self.viewers,
            self.connections,
            if self.connections == 1 { "" } else { "s" },
            secs,
            self.parts,
            self.parts as f64 / secs,
            self.parts as f64 / secs / self.viewers.max(1) as f64,
            self.bytes as f64 / 1e6,
            self.playlists,
            self.errors,
        );
        if let Some(cpu) = self.server_cpu {
            s.push_str(&format!(
                "server CPU: {:.3} s ({:.1} % of a core): {:.3} % of a core per viewer, {:.1} us per part served\n",
                cpu,
                cpu / secs * 100.0,
                cpu / secs * 100.0 / self.viewers.max(1) as f64,
                cpu / self.parts.max(1) as f64 * 1e6,
            ));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_player_reads_the_parts_of_each_segment_and_the_next_to_come() {
        let text = "#EXTM3U\n#EXT-X-PART-INF:PART-TARGET=0.5\n#EXT-X-MEDIA-SEQUENCE:4\n\
                    #EXT-X-PART:DURATION=0.5,URI=\"part-16.m4s\",INDEPENDENT=YES\n\
                    #EXT-X-PART:DURATION=0.5,URI=\"part-17.m4s\"\n\
                    #EXTINF:1.0,\nseg-4.m4s\n\
                    #EXT-X-PART:DURATION=0.5,URI=\"part-18.m4s\",INDEPENDENT=YES\n\
                    #EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"part-19.m4s\"\n";
        let p = Playlist::parse(text);
        assert_eq!(p.part_target, Some(0.5));
        assert_eq!(p.open_segment(), 5);
        assert_eq!(p.parts_of(4), 2);
        assert_eq!(p.parts[&5], vec!["part-18.m4s".to_string()]);
        assert_eq!(p.next_part(), (5, 1));
        assert!(!p.ended);
        assert!(Playlist::parse("#EXTM3U\n#EXT-X-ENDLIST\n").ended);
    }
}
