//! The engine on a 60 s 720p30 High-profile B-frame stream (make it with
//! `bench/make-bench-stream.sh`): parse + assemble + time + segment +
//! manifests, and the same plus muxing every segment as CMAF and MPEG-TS
//! (the work of `liveslice package`). Throughput is input bytes; frames/s
//! = bytes/s ÷ (input bytes / 1800 frames), printed at the start.
//!
//! `mux_parts_only` muxes the stream's parts (500 ms, the server's default)
//! with the `PartMuxer`, as a session does when each part closes: the time
//! per part is that figure ÷ the part count printed at the start.
//!
//! `cargo bench -p liveslice-server --bench engine`

use std::sync::Arc;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use liveslice_server::engine::mux::parts::{Formats, PartMuxer};
use liveslice_server::engine::mux::{cmaf, ts};
use liveslice_server::engine::PartRecord;
use liveslice_server::engine::{CodecConfig, Event, Frame, PipelineOptions, SessionPipeline};

const INPUT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../target/bench/720p30_bframes.h264"
);
const CHUNK: usize = 64 * 1024;

fn input() -> Option<Bytes> {
    match std::fs::read(INPUT) {
        Ok(b) => Some(Bytes::from(b)),
        Err(_) => {
            eprintln!("{INPUT} is missing: run bench/make-bench-stream.sh first");
            None
        }
    }
}

/// The whole engine; returns frames and segments made.
fn pipeline(data: &Bytes, events: &mut Vec<Event>) -> (usize, usize) {
    let mut p = SessionPipeline::new(PipelineOptions::default());
    let mut pos = 0;
    while pos < data.len() {
        let end = (pos + CHUNK).min(data.len());
        p.push(data.slice(pos..end), None, 0, false, events);
        pos = end;
    }
    p.finish(0, events);
    let frames = events
        .iter()
        .filter(|e| matches!(e, Event::Frame(_)))
        .count();
    let segments = events
        .iter()
        .filter(|e| matches!(e, Event::Segment(_)))
        .count();
    (frames, segments)
}

/// The engine plus both muxers over every segment; returns output bytes.
fn package(data: &Bytes) -> usize {
    let mut events = Vec::new();
    pipeline(data, &mut events);
    let mut frames: Vec<Arc<Frame>> = Vec::new();
    let mut config: Option<Arc<CodecConfig>> = None;
    let mut ts_mux = ts::TsMuxer::new();
    let mut out = 0;
    let mut init_done = false;
    for e in &events {
        match e {
            Event::Frame(f) => frames.push(f.clone()),
            Event::Config(c) => config = Some(c.clone()),
            Event::Segment(s) => {
                let Some(cfg) = &config else { continue };
                if !init_done {
                    out += cmaf::init_segment(cfg).map(|b| b.len()).unwrap_or(0);
                    init_done = true;
                }
                let n = s.record.frame_count as usize;
                let seg: Vec<&Frame> = frames.iter().take(n).map(|f| f.as_ref()).collect();
                out += cmaf::media_segment(&s.record, &seg, s.record.start + s.record.duration)
                    .map(|b| b.len())
                    .unwrap_or(0);
                out += ts_mux.segment(&seg, cfg).map(|b| b.len()).unwrap_or(0);
                frames.drain(..n.min(frames.len()));
            }
            _ => {}
        }
    }
    out
}

/// Every part with its frames and config, from one engine run.
type PartJob = (Arc<PartRecord>, Vec<Arc<Frame>>, Arc<CodecConfig>);

fn part_jobs(events: &[Event]) -> Vec<PartJob> {
    let mut frames: Vec<Arc<Frame>> = Vec::new();
    let mut config: Option<Arc<CodecConfig>> = None;
    let mut jobs = Vec::new();
    for e in events {
        match e {
            Event::Frame(f) => frames.push(f.clone()),
            Event::Config(c) => config = Some(c.clone()),
            Event::Part(p) => {
                let Some(cfg) = &config else { continue };
                let mine: Vec<Arc<Frame>> = frames
                    .iter()
                    .filter(|f| {
                        f.index >= p.first_frame_index
                            && f.index < p.first_frame_index + u64::from(p.frame_count)
                    })
                    .cloned()
                    .collect();
                jobs.push((p.clone(), mine, cfg.clone()));
            }
            _ => {}
        }
    }
    jobs
}

/// Muxes every part (CMAF chunk and MPEG-TS packets); returns output bytes.
fn mux_parts(jobs: &[PartJob]) -> usize {
    let mut muxer = PartMuxer::new(Formats::default());
    let mut out = 0;
    for (rec, frames, cfg) in jobs {
        let refs: Vec<&Frame> = frames.iter().map(|f| f.as_ref()).collect();
        if let Ok(m) = muxer.mux(rec.clone(), &refs, cfg) {
            out += m.cmaf.len() + m.ts.len();
        }
    }
    out
}

fn bench(c: &mut Criterion) {
    let Some(data) = input() else { return };
    let mut events = Vec::new();
    let (frames, segments) = pipeline(&data, &mut events);
    eprintln!(
        "input: {} bytes, {frames} frames, {segments} segments ({} bytes per frame)",
        data.len(),
        data.len() / frames.max(1)
    );
    let mut g = c.benchmark_group("engine_720p30_bframes_60s");
    g.sample_size(10);
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.bench_function("pipeline", |b| {
        b.iter(|| {
            let mut ev = Vec::with_capacity(4096);
            pipeline(&data, &mut ev)
        })
    });
    g.bench_function("package_cmaf_and_ts", |b| b.iter(|| package(&data)));
    let jobs = part_jobs(&events);
    eprintln!(
        "parts: {} (500 ms), {} muxed bytes",
        jobs.len(),
        mux_parts(&jobs)
    );
    g.bench_function("mux_parts_only", |b| b.iter(|| mux_parts(&jobs)));
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
