//! What the run measures: shared counters (atomics), latency histograms
//! (a few mutex-guarded shards, so memory does not grow with subscribers),
//! final statuses of the streams, and the server's resident memory.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;

/// Latency samples are microseconds, 1 µs to 60 s, 3 significant digits.
pub const MAX_LATENCY_US: u64 = 60_000_000;
const SHARDS: usize = 16;

pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("valid histogram bounds")
}

pub fn now_unix_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// Counters every task adds to. All are totals since the start; a step's
/// figures are the difference of two snapshots.
#[derive(Default)]
pub struct Counters {
    pub frames_sent: AtomicU64,
    pub bytes_sent: AtomicU64,
    /// Real-time sends that left more than one frame period after their
    /// time: the load generator (or its machine) could not keep up.
    pub late_sends: AtomicU64,
    pub max_late_us: AtomicU64,
    pub frames_received: AtomicU64,
    pub bytes_received: AtomicU64,
    /// Frames the server dropped from what publishers sent (FrameDropped
    /// on the publisher's stream).
    pub frames_dropped: AtomicU64,
    /// FrameDropped counts reported to subscribers.
    pub subscriber_drop_reports: AtomicU64,
    pub lagged_events: AtomicU64,
    /// Lagged.skipped_frames, summed.
    pub lagged_skipped: AtomicU64,
    /// Frames a subscriber never got: gaps in FrameInfo.index.
    pub index_gaps: AtomicU64,
    pub connect_failures: AtomicU64,
    /// Sessions whose publisher and subscribers were all set up.
    pub sessions_opened: AtomicU64,
    pub sessions_failed: AtomicU64,
    /// Frames the server said it accepted (SessionEnded.frames).
    pub server_frames: AtomicU64,
}

#[derive(Clone, Copy, Debug, Default)]
pub struct Snapshot {
    pub frames_sent: u64,
    pub bytes_sent: u64,
    pub late_sends: u64,
    pub max_late_us: u64,
    pub frames_received: u64,
    pub bytes_received: u64,
    pub frames_dropped: u64,
    pub subscriber_drop_reports: u64,
    pub lagged_events: u64,
    pub lagged_skipped: u64,
    pub index_gaps: u64,
    pub connect_failures: u64,
    pub sessions_opened: u64,
    pub sessions_failed: u64,
    pub server_frames: u64,
}

impl Counters {
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            frames_sent: self.frames_sent.load(Relaxed),
            bytes_sent: self.bytes_sent.load(Relaxed),
            late_sends: self.late_sends.load(Relaxed),
            max_late_us: self.max_late_us.load(Relaxed),
            frames_received: self.frames_received.load(Relaxed),
            bytes_received: self.bytes_received.load(Relaxed),
            frames_dropped: self.frames_dropped.load(Relaxed),
            subscriber_drop_reports: self.subscriber_drop_reports.load(Relaxed),
            lagged_events: self.lagged_events.load(Relaxed),
            lagged_skipped: self.lagged_skipped.load(Relaxed),
            index_gaps: self.index_gaps.load(Relaxed),
            connect_failures: self.connect_failures.load(Relaxed),
            sessions_opened: self.sessions_opened.load(Relaxed),
            sessions_failed: self.sessions_failed.load(Relaxed),
            server_frames: self.server_frames.load(Relaxed),
        }
    }
}

impl Snapshot {
    /// `self - earlier`, except the maximum, which is kept.
    pub fn since(&self, earlier: &Snapshot) -> Snapshot {
        Snapshot {
            frames_sent: self.frames_sent - earlier.frames_sent,
            bytes_sent: self.bytes_sent - earlier.bytes_sent,
            late_sends: self.late_sends - earlier.late_sends,
            max_late_us: self.max_late_us,
            frames_received: self.frames_received - earlier.frames_received,
            bytes_received: self.bytes_received - earlier.bytes_received,
            frames_dropped: self.frames_dropped - earlier.frames_dropped,
            subscriber_drop_reports: self.subscriber_drop_reports - earlier.subscriber_drop_reports,
            lagged_events: self.lagged_events - earlier.lagged_events,
            lagged_skipped: self.lagged_skipped - earlier.lagged_skipped,
            index_gaps: self.index_gaps - earlier.index_gaps,
            connect_failures: self.connect_failures - earlier.connect_failures,
            sessions_opened: self.sessions_opened - earlier.sessions_opened,
            sessions_failed: self.sessions_failed - earlier.sessions_failed,
            server_frames: self.server_frames - earlier.server_frames,
        }
    }

    /// Any frame dropped, skipped or lagged.
    pub fn any_drop(&self) -> bool {
        self.frames_dropped
            + self.subscriber_drop_reports
            + self.lagged_events
            + self.lagged_skipped
            + self.index_gaps
            > 0
    }
}

/// Latency histograms, sharded by subscriber so that two worker threads
/// rarely meet on one lock and memory stays a few MB whatever M × N is.
pub struct Latencies {
    shards: Vec<Mutex<Histogram<u64>>>,
}

impl Default for Latencies {
    fn default() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(new_histogram())).collect(),
        }
    }
}

impl Latencies {
    #[inline]
    pub fn record(&self, shard: usize, us: u64) {
        let mut h = self.shards[shard % SHARDS]
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        h.saturating_record(us);
    }

    /// The samples since the last `take` (or `reset`), merged; the shards
    /// start over.
    pub fn take(&self) -> Histogram<u64> {
        let mut out = new_histogram();
        for s in &self.shards {
            let mut h = s.lock().unwrap_or_else(|e| e.into_inner());
            // Same bounds: cannot fail.
            let _ = out.add(&*h);
            h.reset();
        }
        out
    }
}

/// Final statuses of streams (publishers and subscribers), by gRPC code
/// name, and the first error's message.
#[derive(Default)]
pub struct Statuses {
    inner: Mutex<(BTreeMap<String, u64>, Option<String>)>,
}

pub fn code_name(code: tonic::Code) -> String {
    match code {
        tonic::Code::Ok => "OK".into(),
        c => format!("{c:?}"),
    }
}

impl Statuses {
    pub fn ok(&self) {
        self.add("OK".into(), None);
    }

    pub fn error(&self, status: &tonic::Status, what: &str) {
        self.add(
            code_name(status.code()),
            Some(format!(
                "{what}: {}: {}",
                code_name(status.code()),
                status.message()
            )),
        );
    }

    /// An error that is not a gRPC status (a failed connect, a timeout).
    pub fn other(&self, name: &str, detail: String) {
        self.add(name.into(), Some(detail));
    }

    fn add(&self, name: String, detail: Option<String>) {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        *g.0.entry(name).or_insert(0) += 1;
        if g.1.is_none() {
            g.1 = detail;
        }
    }

    pub fn snapshot(&self) -> (BTreeMap<String, u64>, Option<String>) {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// Codes in `now` minus those in `before`, dropping zeros.
pub fn status_delta(
    now: &BTreeMap<String, u64>,
    before: &BTreeMap<String, u64>,
) -> BTreeMap<String, u64> {
    now.iter()
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0)))
        .filter(|(_, v)| *v > 0)
        .collect()
}

pub fn error_count(statuses: &BTreeMap<String, u64>) -> u64 {
    statuses
        .iter()
        .filter(|(k, _)| k.as_str() != "OK")
        .map(|(_, v)| v)
        .sum()
}

/// One subscriber's own counts (the totals are in [`Counters`]).
#[derive(Default)]
pub struct SubStats {
    pub frames: AtomicU64,
    pub lagged: AtomicU64,
}

/// What one subscriber saw, for the report.
#[derive(Clone, Copy, Debug, Default)]
pub struct SubCounts {
    pub frames: u64,
    pub lagged: u64,
}

impl SubStats {
    pub fn counts(&self) -> SubCounts {
        SubCounts {
            frames: self.frames.load(Relaxed),
            lagged: self.lagged.load(Relaxed),
        }
    }
}

/// `/proc/PID/stat` reports CPU time in clock ticks of `USER_HZ`, which
/// Linux fixes at 100 for user space on every architecture it is built for
/// here.
const USER_HZ: f64 = 100.0;

/// CPU seconds (user + system) a process has used so far, from
/// `/proc/PID/stat` (`self` for this process).
pub fn cpu_seconds(pid: &str) -> Option<f64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces:
    // count fields from after its closing one. utime and stime are fields
    // 14 and 15, so the 12th and 13th after it.
    let rest = &text[text.rfind(')')? + 1..];
    let mut f = rest.split_whitespace().skip(11);
    let utime: u64 = f.next()?.parse().ok()?;
    let stime: u64 = f.next()?.parse().ok()?;
    Some((utime + stime) as f64 / USER_HZ)
}

/// Seconds a process's threads have spent runnable but waiting for a CPU
/// (the second field of each `/proc/PID/task/TID/schedstat`, summed): on
/// a machine shared with other work, how much the other work held us up.
pub fn run_delay_seconds(pid: &str) -> Option<f64> {
    let mut ns = 0u64;
    for t in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        let Ok(t) = t else { continue };
        let Ok(text) = std::fs::read_to_string(t.path().join("schedstat")) else {
            continue;
        };
        ns += text
            .split_whitespace()
            .nth(1)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
    }
    Some(ns as f64 / 1e9)
}

/// CPU used by this process and, when known, the server between two
/// instants.
#[derive(Clone, Copy, Debug)]
pub struct CpuMark {
    at: std::time::Instant,
    own: Option<f64>,
    server: Option<f64>,
    own_wait: Option<f64>,
    server_wait: Option<f64>,
}

#[derive(Clone, Copy, Debug, Default)]
pub struct CpuUse {
    pub seconds: f64,
    /// CPU seconds of the load generator and the server over `seconds`.
    pub load_generator_s: Option<f64>,
    pub server_s: Option<f64>,
    /// Seconds their threads waited, runnable, for a CPU (summed over
    /// threads, so it can exceed `seconds`).
    pub load_generator_wait_s: Option<f64>,
    pub server_wait_s: Option<f64>,
}

impl CpuMark {
    pub fn now(server_pid: Option<u32>) -> Self {
        let server = server_pid.map(|p| p.to_string());
        Self {
            at: std::time::Instant::now(),
            own: cpu_seconds("self"),
            server: server.as_deref().and_then(cpu_seconds),
            own_wait: run_delay_seconds("self"),
            server_wait: server.as_deref().and_then(run_delay_seconds),
        }
    }

    pub fn since(&self, earlier: &CpuMark) -> CpuUse {
        let d = |a: Option<f64>, b: Option<f64>| Some((a? - b?).max(0.0));
        CpuUse {
            seconds: self.at.duration_since(earlier.at).as_secs_f64(),
            load_generator_s: d(self.own, earlier.own),
            server_s: d(self.server, earlier.server),
            load_generator_wait_s: d(self.own_wait, earlier.own_wait),
            server_wait_s: d(self.server_wait, earlier.server_wait),
        }
    }
}

/// The server's resident memory from /proc/PID/status, when readable:
/// sampled at start, every 250 ms for the peak, and on request.
pub struct Rss {
    pid: u32,
    pub start_kib: u64,
    peak_kib: Arc<AtomicU64>,
    sampler: tokio::task::JoinHandle<()>,
}

pub fn read_rss_kib(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = text.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

impl Rss {
    pub fn start(pid: u32) -> Result<Self, String> {
        let start_kib = read_rss_kib(pid)
            .ok_or_else(|| format!("cannot read VmRSS from /proc/{pid}/status"))?;
        let peak_kib = Arc::new(AtomicU64::new(start_kib));
        let peak = peak_kib.clone();
        let sampler = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(250));
            loop {
                tick.tick().await;
                if let Some(kib) = read_rss_kib(pid) {
                    peak.fetch_max(kib, Relaxed);
                }
            }
        });
        Ok(Self {
            pid,
            start_kib,
            peak_kib,
            sampler,
        })
    }

    pub fn sample(&self) -> Option<u64> {
        let kib = read_rss_kib(self.pid)?;
        self.peak_kib.fetch_max(kib, Relaxed);
        Some(kib)
    }

    pub fn peak(&self) -> u64 {
        self.peak_kib.load(Relaxed)
    }
}

impl Drop for Rss {
    fn drop(&mut self) {
        self.sampler.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_cpu_time_is_readable_and_grows() {
        let a = cpu_seconds("self").expect("/proc/self/stat");
        let mut x = 0u64;
        let t = std::time::Instant::now();
        while t.elapsed() < Duration::from_millis(50) {
            x = x.wrapping_mul(31).wrapping_add(7);
        }
        std::hint::black_box(x);
        let b = cpu_seconds("self").expect("/proc/self/stat");
        assert!(b >= a, "{a} -> {b}");
        assert!(cpu_seconds("4294967295").is_none());
        assert!(run_delay_seconds("self").is_some());
        assert!(run_delay_seconds("4294967295").is_none());
    }
}
