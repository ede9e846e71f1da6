//! The summary: ghz-style text, or one JSON object with every figure.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use hdrhistogram::Histogram;
use serde_json::{json, Value};

use crate::run::{Figures, Outcome, Plan, Rate};
use crate::stats::error_count;

const PERCENTILES: [f64; 8] = [10.0, 25.0, 50.0, 75.0, 90.0, 95.0, 99.0, 99.9];
const MB: f64 = 1e6;

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

fn per_s(n: u64, f: &Figures) -> f64 {
    let s = f.elapsed.as_secs_f64();
    if s > 0.0 {
        n as f64 / s
    } else {
        0.0
    }
}

/// ghz's response time histogram: ten equal buckets from the fastest to
/// the slowest sample, each counting the samples up to its mark.
fn buckets(h: &Histogram<u64>) -> Vec<(f64, u64)> {
    if h.is_empty() {
        return Vec::new();
    }
    let (lo, hi) = (h.min(), h.max());
    let n = 10u64;
    let marks: Vec<u64> = (0..=n).map(|i| lo + (hi - lo) * i / n).collect();
    let mut counts = vec![0u64; marks.len()];
    for v in h.iter_recorded() {
        let value = h.highest_equivalent(v.value_iterated_to()).min(hi);
        let i = marks.partition_point(|m| *m < value).min(marks.len() - 1);
        counts[i] += v.count_at_value();
    }
    marks.into_iter().map(ms).zip(counts).collect()
}

fn latency_json(h: &Histogram<u64>) -> Value {
    if h.is_empty() {
        return json!({ "count": 0 });
    }
    let mut pct = serde_json::Map::new();
    for p in PERCENTILES {
        pct.insert(format!("p{p}"), json!(ms(h.value_at_percentile(p))));
    }
    json!({
        "count": h.len(),
        "fastest_ms": ms(h.min()),
        "slowest_ms": ms(h.max()),
        "average_ms": h.mean() / 1000.0,
        "stdev_ms": h.stdev() / 1000.0,
        "percentiles_ms": pct,
        "histogram": buckets(h).into_iter().map(|(mark, count)| json!({"mark_ms": mark, "count": count})).collect::<Vec<_>>(),
    })
}

fn figures_json(f: &Figures) -> Value {
    let c = &f.counts;
    json!({
        "sessions": f.sessions,
        "subscribers": f.subscribers,
        "elapsed_s": f.elapsed.as_secs_f64(),
        "latency": latency_json(&f.latency),
        "in": {
            "frames": c.frames_sent,
            "bytes": c.bytes_sent,
            "frames_per_s": per_s(c.frames_sent, f),
            "mb_per_s": per_s(c.bytes_sent, f) / MB,
        },
        "out": {
            "frames": c.frames_received,
            "bytes": c.bytes_received,
            "frames_per_s": per_s(c.frames_received, f),
            "mb_per_s": per_s(c.bytes_received, f) / MB,
        },
        "drops": {
            "frames_dropped_by_server": c.frames_dropped,
            "subscriber_drop_reports": c.subscriber_drop_reports,
            "lagged_events": c.lagged_events,
            "lagged_skipped_frames": c.lagged_skipped,
            "missing_frames": c.index_gaps,
            "any": c.any_drop(),
        },
        "errors": error_count(&f.statuses),
        "status_codes": f.statuses,
        "connect_failures": c.connect_failures,
        "sessions_opened": c.sessions_opened,
        "sessions_failed": c.sessions_failed,
        "server_rss_kib": f.rss_kib,
    })
}

/// Memory figures derived from the samples, in KiB (signed: RSS can fall).
#[derive(Default)]
struct Memory {
    /// Subscribers in the first step (all of them unless ramping).
    subscribers: u64,
    per_subscriber_joined_kib: Option<f64>,
    per_subscriber_loaded_kib: Option<f64>,
    /// Only without subscribers.
    sessions: u64,
    per_session_kib: Option<f64>,
    media_per_session_kib: Option<f64>,
    /// RSS growth over the media bytes held, without subscribers.
    rss_per_media_byte: Option<f64>,
}

fn memory(plan: &Plan, o: &Outcome) -> Memory {
    let mut m = Memory::default();
    let Some(r) = &o.rss else { return m };
    let kib = |k: u64| k as f64;
    let media_growth_kib = match (o.media_start, o.media_loaded) {
        (Some(a), Some(b)) => Some((b as f64 - a as f64) / 1024.0),
        _ => None,
    };
    let subs = u64::from(plan.sessions) * u64::from(plan.subscribers);
    if subs > 0 {
        m.subscribers = subs;
        if let (Some(before), Some(joined)) = (r.before_subscribers_kib, r.joined_kib) {
            m.per_subscriber_joined_kib = Some((kib(joined) - kib(before)) / subs as f64);
        }
        if plan.ramp.is_none() {
            if let (Some(before), Some(loaded)) = (r.before_subscribers_kib, r.loaded_kib) {
                m.per_subscriber_loaded_kib = Some(
                    (kib(loaded) - kib(before) - media_growth_kib.unwrap_or(0.0)) / subs as f64,
                );
            }
        }
    } else if plan.ramp.is_none() && plan.sessions > 0 {
        let n = u64::from(plan.sessions);
        m.sessions = n;
        if let Some(loaded) = r.loaded_kib {
            let growth = kib(loaded) - kib(r.start_kib);
            m.per_session_kib = Some(growth / n as f64);
            if let Some(media) = media_growth_kib {
                m.media_per_session_kib = Some(media / n as f64);
                if media > 0.0 {
                    m.rss_per_media_byte = Some(growth / media);
                }
            }
        }
    }
    m
}

/// Per-subscriber counts: how many lagged, the most Lagged one got, and
/// frames expected (every frame the server accepted, to every subscriber
/// of its session) against frames received.
struct FanOut {
    subscribers_lagged: u64,
    max_lagged: u64,
    expected: u64,
    missing: u64,
}

fn fan_out(plan: &Plan, o: &Outcome) -> FanOut {
    let c = &o.whole.counts;
    let per_session = if c.server_frames > 0 {
        c.server_frames
    } else {
        c.frames_sent
    };
    let expected = per_session * u64::from(plan.subscribers);
    FanOut {
        subscribers_lagged: o.subscribers.iter().filter(|s| s.lagged > 0).count() as u64,
        max_lagged: o.subscribers.iter().map(|s| s.lagged).max().unwrap_or(0),
        expected,
        missing: expected.saturating_sub(c.frames_received),
    }
}

/// CPU microseconds per frame a subscriber received.
fn per_frame_us(cpu_s: Option<f64>, frames: u64) -> Option<f64> {
    cpu_s
        .filter(|_| frames > 0)
        .map(|s| s * 1e6 / frames as f64)
}

fn cores(cpu_s: Option<f64>, seconds: f64) -> Option<f64> {
    cpu_s.filter(|_| seconds > 0.0).map(|s| s / seconds)
}

pub fn json(plan: &Plan, o: &Outcome) -> Value {
    let mut v = figures_json(&o.whole);
    let subs: Vec<u64> = o.subscribers.iter().map(|s| s.frames).collect();
    let m = v.as_object_mut().expect("an object");
    m.insert(
        "config".into(),
        json!({
            "server": plan.server,
            "sessions": plan.sessions,
            "subscribers_per_session": plan.subscribers,
            "publisher_connections": if plan.publisher_connections == 0 { Value::from("one per publisher") } else { Value::from(o.publisher_connections) },
            "subscriber_connections": if plan.connections == 0 { Value::from("one per subscriber") } else { Value::from(o.shared_connections) },
            "rate": match plan.rate { Rate::Realtime => "realtime", Rate::Max => "max" },
            "idle": plan.idle,
            "duration_s": plan.duration.as_secs_f64(),
            "warmup_s": plan.warmup.as_secs_f64(),
            "stream": o.stream_name,
            "stream_fps": o.stream_fps,
            "stream_frames": o.stream_frames,
            "stream_kbps": o.stream_kbps,
            "ramp": plan.ramp.as_ref().map(|r| json!({
                "step": r.step,
                "step_duration_s": r.step_duration.as_secs_f64(),
                "max_p99_ms": r.max_p99.as_secs_f64() * 1000.0,
                "max_sessions": r.max_sessions,
            })),
        }),
    );
    m.insert(
        "subscriber_frames".into(),
        json!({
            "count": subs.len(),
            "with_frames": subs.iter().filter(|n| **n > 0).count(),
            "min": subs.iter().min(),
            "max": subs.iter().max(),
        }),
    );
    let fo = fan_out(plan, o);
    let h = &o.whole.latency;
    m.insert(
        "fanout".into(),
        json!({
            "subscribers": subs.len(),
            "connections": if plan.connections == 0 { Value::from("one per subscriber") } else { Value::from(o.shared_connections) },
            "latency_ms": if h.is_empty() { Value::Null } else { json!({
                "p50": ms(h.value_at_quantile(0.5)),
                "p99": ms(h.value_at_quantile(0.99)),
                "max": ms(h.max()),
            }) },
            "lagged_events": o.whole.counts.lagged_events,
            "subscribers_lagged": fo.subscribers_lagged,
            "max_lagged_per_subscriber": fo.max_lagged,
            "frames_expected": fo.expected,
            "frames_missing": fo.missing,
        }),
    );
    let mem = memory(plan, o);
    m.insert(
        "memory".into(),
        json!({
            "subscribers": mem.subscribers,
            "per_subscriber_joined_kib": mem.per_subscriber_joined_kib,
            "per_subscriber_loaded_kib": mem.per_subscriber_loaded_kib,
            "sessions": mem.sessions,
            "per_session_kib": mem.per_session_kib,
            "media_per_session_kib": mem.media_per_session_kib,
            "rss_growth_per_media_byte": mem.rss_per_media_byte,
            "media_start_bytes": o.media_start,
            "media_loaded_bytes": o.media_loaded,
            "media_error": o.media_error,
        }),
    );
    m.insert(
        "cpu".into(),
        json!({
            "seconds": o.cpu.seconds,
            "load_generator_s": o.cpu.load_generator_s,
            "load_generator_cores": cores(o.cpu.load_generator_s, o.cpu.seconds),
            "server_s": o.cpu.server_s,
            "server_cores": cores(o.cpu.server_s, o.cpu.seconds),
            "frames_received": o.cpu_frames,
            "load_generator_us_per_frame": per_frame_us(o.cpu.load_generator_s, o.cpu_frames),
            "server_us_per_frame": per_frame_us(o.cpu.server_s, o.cpu_frames),
            "load_generator_waited_for_cpu_s": o.cpu.load_generator_wait_s,
            "server_waited_for_cpu_s": o.cpu.server_wait_s,
        }),
    );
    m.insert(
        "server_frames_accepted".into(),
        json!(o.whole.counts.server_frames),
    );
    m.insert(
        "publisher".into(),
        json!({
            "late_sends": o.whole.counts.late_sends,
            "max_late_ms": ms(o.whole.counts.max_late_us),
        }),
    );
    m.insert("unfinished_streams".into(), json!(o.unfinished));
    m.insert("first_error".into(), json!(o.first_error));
    m.insert("interrupted".into(), json!(o.interrupted));
    m.insert(
        "server_rss".into(),
        match (&o.rss, &o.rss_error) {
            (Some(r), _) => json!({
                "pid": plan.server_pid,
                "start_kib": r.start_kib,
                "before_subscribers_kib": r.before_subscribers_kib,
                "joined_kib": r.joined_kib,
                "peak_kib": r.peak_kib,
                "loaded_kib": r.loaded_kib,
                "end_kib": r.end_kib,
            }),
            (None, Some(e)) => json!({ "error": e }),
            (None, None) => Value::Null,
        },
    );
    m.insert(
        "ramp".into(),
        match &o.ramp {
            None => Value::Null,
            Some((steps, best)) => json!({
                "largest_sessions_held": best.map(|i| steps[i].figures.sessions),
                "best_step": best.map(|i| figures_json(&steps[i].figures)),
                "steps": steps.iter().map(|s| {
                    let mut v = figures_json(&s.figures);
                    let m = v.as_object_mut().expect("an object");
                    m.insert("held".into(), json!(s.held));
                    m.insert("verdict".into(), json!(s.why));
                    v
                }).collect::<Vec<_>>(),
            }),
        },
    );
    v
}

fn summary(out: &mut String, f: &Figures) {
    let h = &f.latency;
    let _ = writeln!(out, "\nSummary:");
    let _ = writeln!(out, "  Count:\t{}", h.len());
    let _ = writeln!(out, "  Total:\t{:.2} s", f.elapsed.as_secs_f64());
    if !h.is_empty() {
        let _ = writeln!(out, "  Slowest:\t{:.2} ms", ms(h.max()));
        let _ = writeln!(out, "  Fastest:\t{:.2} ms", ms(h.min()));
        let _ = writeln!(out, "  Average:\t{:.2} ms", h.mean() / 1000.0);
    }
    let _ = writeln!(
        out,
        "  Requests/sec:\t{:.2}",
        per_s(f.counts.frames_received, f)
    );
    let b = buckets(h);
    if !b.is_empty() {
        let _ = writeln!(out, "\nResponse time histogram:");
        let top = b.iter().map(|(_, c)| *c).max().unwrap_or(1).max(1);
        let width = b
            .iter()
            .map(|(_, c)| c.to_string().len())
            .max()
            .unwrap_or(1)
            + 2;
        for (mark, count) in &b {
            let bar = "∎".repeat((count * 40).div_ceil(top) as usize);
            let _ = writeln!(out, "  {mark:<8.3} {:<width$} |{bar}", format!("[{count}]"));
        }
        let _ = writeln!(out, "\nLatency distribution:");
        for p in PERCENTILES {
            let _ = writeln!(out, "  {p} % in {:.2} ms", ms(h.value_at_percentile(p)));
        }
    }
    let _ = writeln!(out, "\nStatus code distribution:");
    status_lines(out, &f.statuses);
    let c = &f.counts;
    let _ = writeln!(out, "\nThroughput:");
    let _ = writeln!(
        out,
        "  In:   {} frames ({:.1}/s), {:.2} MB ({:.3} MB/s)",
        c.frames_sent,
        per_s(c.frames_sent, f),
        c.bytes_sent as f64 / MB,
        per_s(c.bytes_sent, f) / MB
    );
    let _ = writeln!(
        out,
        "  Out:  {} frames ({:.1}/s), {:.2} MB ({:.3} MB/s)",
        c.frames_received,
        per_s(c.frames_received, f),
        c.bytes_received as f64 / MB,
        per_s(c.bytes_received, f) / MB
    );
    let _ = writeln!(
        out,
        "\nDrops: {} dropped by the server, {} reported to subscribers, {} lagged ({} frames skipped), {} missing",
        c.frames_dropped, c.subscriber_drop_reports, c.lagged_events, c.lagged_skipped, c.index_gaps
    );
    let _ = writeln!(
        out,
        "Errors: {} (connect failures {}); sessions {} opened, {} failed",
        error_count(&f.statuses),
        c.connect_failures,
        c.sessions_opened,
        c.sessions_failed
    );
}

fn status_lines(out: &mut String, statuses: &BTreeMap<String, u64>) {
    if statuses.is_empty() {
        let _ = writeln!(out, "  (no stream ended)");
    }
    let w = statuses.keys().map(|k| k.len()).max().unwrap_or(2) + 2;
    for (code, n) in statuses {
        let _ = writeln!(out, "  {:<w$} {n} streams", format!("[{code}]"));
    }
}

pub fn text(plan: &Plan, o: &Outcome) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "liveslice-loadtest: {} x {} subscribers against {}, {}{}, stream {} ({} frames, {:.2} fps, {:.0} kbit/s)",
        match &plan.ramp {
            Some(r) => format!(
                "ramp from {} sessions by {} every {:.1} s up to {} sessions (p99 <= {:.1} ms, no drops)",
                plan.sessions,
                r.step,
                r.step_duration.as_secs_f64(),
                r.max_sessions,
                r.max_p99.as_secs_f64() * 1000.0
            ),
            None => format!("{} sessions", plan.sessions),
        },
        plan.subscribers,
        plan.server,
        if plan.idle {
            "idle"
        } else if plan.rate == Rate::Max {
            "flat out"
        } else {
            "real time"
        },
        if o.interrupted { ", interrupted" } else { "" },
        o.stream_name,
        o.stream_frames,
        o.stream_fps,
        o.stream_kbps
    );
    if plan.publisher_connections > 0 || plan.connections > 0 {
        let each = |shared: u32, opened: usize| {
            if shared == 0 {
                "a connection each".to_string()
            } else {
                format!("{opened} shared connections")
            }
        };
        let _ = writeln!(
            out,
            "Connections: publishers on {}, subscribers on {}",
            each(plan.publisher_connections, o.publisher_connections),
            each(plan.connections, o.shared_connections)
        );
    }
    if let Some((steps, best)) = &o.ramp {
        let _ = writeln!(out, "\nRamp:");
        let _ = writeln!(
            out,
            "  {:>8} {:>9} {:>9} {:>9} {:>9} {:>6} {:>7}  verdict",
            "sessions", "frames/s", "p50 ms", "p99 ms", "max ms", "drops", "errors"
        );
        for s in steps {
            let f = &s.figures;
            let h = &f.latency;
            let c = &f.counts;
            let _ = writeln!(
                out,
                "  {:>8} {:>9.1} {:>9.2} {:>9.2} {:>9.2} {:>6} {:>7}  {}",
                f.sessions,
                per_s(c.frames_received, f),
                ms(h.value_at_quantile(0.5)),
                ms(h.value_at_quantile(0.99)),
                ms(h.max()),
                c.frames_dropped + c.subscriber_drop_reports + c.lagged_skipped + c.index_gaps,
                error_count(&f.statuses),
                s.why
            );
        }
        match best {
            Some(i) => {
                let _ = writeln!(
                    out,
                    "\nLargest session count that held: {} (its step below)",
                    steps[*i].figures.sessions
                );
                summary(&mut out, &steps[*i].figures);
            }
            None => {
                let _ = writeln!(out, "\nNo step held; the whole run:");
                summary(&mut out, &o.whole);
            }
        }
    } else {
        summary(&mut out, &o.whole);
    }
    let subs: Vec<u64> = o.subscribers.iter().map(|s| s.frames).collect();
    if !subs.is_empty() {
        let fo = fan_out(plan, o);
        let _ = writeln!(
            out,
            "Subscribers: {} ({} saw frames; {}..{} frames each)",
            subs.len(),
            subs.iter().filter(|n| **n > 0).count(),
            subs.iter().min().unwrap_or(&0),
            subs.iter().max().unwrap_or(&0)
        );
        let h = &o.whole.latency;
        let _ = writeln!(
            out,
            "Fan-out: {} subscribers on {}: latency p50 {}, p99 {}, max {}; Lagged: {} events in {} subscribers (at most {} for one); frames missing: {} of {}",
            subs.len(),
            if plan.connections == 0 {
                "a connection each".to_string()
            } else {
                format!("{} shared connections", o.shared_connections)
            },
            lat(h, 0.5),
            lat(h, 0.99),
            if h.is_empty() { "-".into() } else { format!("{:.2} ms", ms(h.max())) },
            o.whole.counts.lagged_events,
            fo.subscribers_lagged,
            fo.max_lagged,
            fo.missing,
            fo.expected
        );
    }
    let c = &o.whole.counts;
    let _ = writeln!(
        out,
        "Server accepted {} frames; load generator: {} late sends (max {:.2} ms late), {} unfinished streams",
        c.server_frames,
        c.late_sends,
        ms(c.max_late_us),
        o.unfinished
    );
    if let Some(e) = &o.first_error {
        let _ = writeln!(out, "First error: {e}");
    }
    match (&o.rss, &o.rss_error) {
        (Some(r), _) => {
            let mib = |k: u64| k as f64 / 1024.0;
            let _ = writeln!(
                out,
                "Server memory (VmRSS, pid {}): start {:.1} MiB, peak {:.1} MiB, loaded {}, end {}",
                plan.server_pid.unwrap_or(0),
                mib(r.start_kib),
                mib(r.peak_kib),
                r.loaded_kib
                    .map_or("-".into(), |k| format!("{:.1} MiB", mib(k))),
                r.end_kib
                    .map_or("-".into(), |k| format!("{:.1} MiB", mib(k))),
            );
        }
        (None, Some(e)) => {
            let _ = writeln!(out, "Server memory: {e}");
        }
        _ => {}
    }
    memory_lines(&mut out, plan, o);
    let cpu = &o.cpu;
    let _ = writeln!(
        out,
        "CPU over {:.1} s{}: load generator {}, server {}",
        cpu.seconds,
        if plan.ramp.is_some() {
            String::new()
        } else if plan.warmup.is_zero() {
            " of frames".to_string()
        } else {
            format!(
                " of frames after a {:.0} s warm-up (latency too)",
                plan.warmup.as_secs_f64()
            )
        },
        cpu_text(cpu.load_generator_s, cpu.seconds),
        cpu_text(cpu.server_s, cpu.seconds),
    );
    if let (Some(l), Some(s)) = (
        per_frame_us(cpu.load_generator_s, o.cpu_frames),
        per_frame_us(cpu.server_s, o.cpu_frames),
    ) {
        let _ = writeln!(
            out,
            "CPU per frame received ({} frames): load generator {l:.1} us, server {s:.1} us",
            o.cpu_frames
        );
    }
    if let (Some(l), Some(s)) = (cpu.load_generator_wait_s, cpu.server_wait_s) {
        let _ = writeln!(
            out,
            "Waited for a CPU (runnable, another thread or process on it): load generator {l:.2} s, server {s:.2} s (summed over threads)"
        );
    } else if let Some(l) = cpu.load_generator_wait_s {
        let _ = writeln!(
            out,
            "Waited for a CPU (runnable, another thread or process on it): load generator {l:.2} s (summed over threads)"
        );
    }
    out
}

fn lat(h: &Histogram<u64>, q: f64) -> String {
    if h.is_empty() {
        "-".into()
    } else {
        format!("{:.2} ms", ms(h.value_at_quantile(q)))
    }
}

fn cpu_text(s: Option<f64>, over: f64) -> String {
    match (s, cores(s, over)) {
        (Some(s), Some(c)) => format!("{s:.2} s ({c:.2} cores)"),
        (Some(s), None) => format!("{s:.2} s"),
        _ => "-".into(),
    }
}

fn memory_lines(out: &mut String, plan: &Plan, o: &Outcome) {
    let Some(r) = &o.rss else { return };
    let mem = memory(plan, o);
    let mib = |k: u64| k as f64 / 1024.0;
    let opt_mib = |k: Option<u64>| k.map_or("-".into(), |k| format!("{:.1} MiB", mib(k)));
    let media_mib =
        |b: Option<u64>| b.map_or("-".into(), |b| format!("{:.1} MiB", b as f64 / 1048576.0));
    if mem.subscribers > 0 {
        let _ = writeln!(
            out,
            "Per subscriber: {} of server RSS once joined ({} before the subscribers, {} with {} joined); {} while frames flowed ({} at the stop, less the media the sessions hold: {})",
            mem.per_subscriber_joined_kib.map_or("-".into(), |k| format!("{k:.1} KiB")),
            opt_mib(r.before_subscribers_kib),
            opt_mib(r.joined_kib),
            mem.subscribers,
            mem.per_subscriber_loaded_kib.map_or("-".into(), |k| format!("{k:.1} KiB")),
            opt_mib(r.loaded_kib),
            media_mib(o.media_loaded),
        );
    } else if mem.sessions > 0 {
        let _ = writeln!(
            out,
            "Per session: {} of server RSS ({:.1} MiB at the start, {} with {} sessions{}); media held: {} ({} per session); RSS growth / media held: {}",
            mem.per_session_kib.map_or("-".into(), |k| format!("{k:.1} KiB")),
            mib(r.start_kib),
            opt_mib(r.loaded_kib),
            mem.sessions,
            if plan.idle { " idle after one keyframe" } else { "" },
            media_mib(o.media_loaded),
            mem.media_per_session_kib.map_or("-".into(), |k| format!("{k:.1} KiB")),
            mem.rss_per_media_byte.map_or("-".into(), |x| format!("{x:.2}x")),
        );
    }
    if let Some(e) = &o.media_error {
        let _ = writeln!(out, "Media bytes held: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_cover_every_sample() {
        let mut h = crate::stats::new_histogram();
        for v in [100u64, 200, 300, 1000, 5000, 5000, 10_000] {
            h.record(v).unwrap();
        }
        let b = buckets(&h);
        assert_eq!(b.len(), 11);
        assert_eq!(b.iter().map(|(_, c)| c).sum::<u64>(), 7);
        assert!((b[0].0 - 0.1).abs() < 0.01);
        assert_eq!(b[10].1, 1, "the slowest sample is in the last bucket");
    }
}
