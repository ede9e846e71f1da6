//! The manifests of a session's renditions together: the HLS multivariant
//! playlist (RFC 8216 4.4.6.2, one `EXT-X-STREAM-INF` per rendition) and a
//! DASH MPD with a video `AdaptationSet` per codec holding a
//! `Representation` per rendition (ISO/IEC 23009-1 5.3.3), rendered from each rendition's own
//! [`Manifests`] (its own segment records), so they never disagree with
//! its media playlist.
//!
//! Renditions are aligned (segment N of each starts at the same time: see
//! [`crate::pipeline::JoinPoint`]); the caller leaves out any that is not.

use std::fmt::Write as _;

use super::dash::{gcd, write_attr, AS_CLOSE, PERIOD_END};
use super::time::write_xs_duration_ticks;
use super::Manifests;
use crate::frame::{VideoCodec, TIMESCALE};

/// One rendition, as the group's manifests list it.
#[derive(Clone, Copy, Debug)]
pub struct Variant<'a> {
    /// Its id: `Representation@id`, and the folder its files are in.
    pub id: &'a str,
    /// Where its files are, relative to the group's manifests: a URL
    /// ending in `/` (`../cam1~360p/`).
    pub base: &'a str,
    pub manifests: &'a Manifests,
}

/// A rendition's bit rates over its listed segments, bits per second: the
/// busiest segment's and the average (video and audio bytes over the
/// segments' durations), both with the containers' overhead (about 10 %).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Bandwidth {
    pub peak: u64,
    pub average: u64,
}

impl Manifests {
    /// The bit rates of the listed segments (see [`Bandwidth`]); zero
    /// before the first segment.
    pub fn bandwidth(&self) -> Bandwidth {
        self.bandwidth_of(|w| w.rec.byte_size + w.rec.audio.as_ref().map_or(0, |a| a.byte_size))
    }

    /// The bit rates of the listed segments' audio alone.
    fn audio_bandwidth(&self) -> Bandwidth {
        self.bandwidth_of(|w| w.rec.audio.as_ref().map_or(0, |a| a.byte_size))
    }

    fn bandwidth_of(&self, bytes_of: impl Fn(&super::WindowSegment) -> u64) -> Bandwidth {
        let (mut peak, mut bytes, mut ticks) = (0u128, 0u128, 0u128);
        for w in &self.window {
            let b = u128::from(bytes_of(w));
            let d = u128::from(w.rec.duration.max(1));
            peak = peak.max(b * u128::from(TIMESCALE) / d);
            bytes += b;
            ticks += d;
        }
        let bits = |bytes_per_s: u128| u64::try_from(bytes_per_s * 8 * 11 / 10).unwrap_or(u64::MAX);
        Bandwidth {
            peak: bits(peak),
            average: bits(bytes * u128::from(TIMESCALE) / ticks.max(1)),
        }
    }

    /// The video config of the newest listed segment.
    fn current_video(&self) -> Option<&crate::frame::CodecConfig> {
        self.configs.get(&self.window.back()?.rec.config_id)
    }
}

/// The HLS multivariant playlist of `variants` (`ts`: their MPEG-TS media
/// playlists, audio muxed in, without the variants that have no audio when
/// the first has; else CMAF, with the first rendition's audio playlist as
/// the `AUDIO` group when it has audio). Variants with no video segment
/// yet are left out; highest peak bandwidth first. `None`
/// when none is left.
pub fn hls_multivariant(variants: &[Variant<'_>], ts: bool) -> Option<String> {
    let audio = variants
        .first()
        .and_then(|v| v.manifests.audio.as_ref().map(|a| (v, a)));
    let group = audio.filter(|_| !ts);
    // A variant without audio of its own plays the group's: its bytes
    // count in the variant's bandwidth (RFC 8216 4.3.4.2).
    let group_audio = group.map(|(v, _)| v.manifests.audio_bandwidth());
    // MPEG-TS variants carry their audio muxed in: when the first has
    // audio, one without (a ladder rung) would lose the sound on a switch,
    // so it is listed only in the CMAF playlist (which has the audio group).
    let needs_audio = ts && audio.is_some();
    let mut listed: Vec<(Bandwidth, &Variant<'_>)> = variants
        .iter()
        .filter(|v| v.manifests.current_video().is_some())
        .filter(|v| !needs_audio || v.manifests.audio.is_some())
        .map(|v| {
            let mut bw = v.manifests.bandwidth();
            if let (Some(a), None) = (group_audio, v.manifests.audio.as_ref()) {
                bw.peak = bw.peak.saturating_add(a.peak);
                bw.average = bw.average.saturating_add(a.average);
            }
            (bw, v)
        })
        .collect();
    if listed.is_empty() {
        return None;
    }
    listed.sort_by(|a, b| b.0.peak.cmp(&a.0.peak).then(a.1.id.cmp(b.1.id)));
    let independent = listed.iter().all(|(_, v)| v.manifests.all_independent);
    let mut s = String::from("#EXTM3U\n#EXT-X-VERSION:");
    s.push_str(if ts { "3\n" } else { "7\n" });
    if independent {
        s.push_str("#EXT-X-INDEPENDENT-SEGMENTS\n");
    }
    if let Some((v, a)) = group {
        let _ = writeln!(
            s,
            "#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"audio\",NAME=\"audio\",DEFAULT=YES,\
             AUTOSELECT=YES,CHANNELS=\"{}\",URI=\"{}audio.m3u8\"",
            a.channels(),
            v.base
        );
    }
    for (bw, v) in listed {
        let Some(video) = v.manifests.current_video() else {
            continue;
        };
        let mut codecs = vec![video.codec_string()];
        // The audio's bytes count in a variant's bandwidth when they are in
        // its segments (TS) or in the group it names.
        if let Some(a) = v.manifests.audio.as_ref().filter(|_| ts) {
            codecs.push(a.codec_string());
        } else if let Some((_, a)) = group {
            codecs.push(a.codec_string());
        }
        let _ = write!(
            s,
            "#EXT-X-STREAM-INF:BANDWIDTH={},AVERAGE-BANDWIDTH={},CODECS=\"{}\",RESOLUTION={}x{}",
            bw.peak.max(1),
            bw.average.max(1),
            codecs.join(","),
            video.width,
            video.height
        );
        if video.frame_rate_num > 0 && video.frame_rate_den > 0 {
            let _ = write!(
                s,
                ",FRAME-RATE={:.3}",
                f64::from(video.frame_rate_num) / f64::from(video.frame_rate_den)
            );
        }
        if group.is_some() {
            s.push_str(",AUDIO=\"audio\"");
        }
        let _ = writeln!(
            s,
            "\n{}{}",
            v.base,
            if ts { "ts/index.m3u8" } else { "index.m3u8" }
        );
    }
    Some(s)
}

/// The DASH MPD of `variants`: the first one's MPD element and periods
/// (the timeline the others joined); in each period, a video
/// `AdaptationSet` per codec with a `Representation` per rendition that has segments
/// in it, each with its own `SegmentTemplate` and `SegmentTimeline` (its
/// own records: the same starts when aligned), and the first rendition's
/// audio. `None` before the first rendition's first segment.
pub fn dash_mpd(variants: &[Variant<'_>], now_ms: u64) -> Option<String> {
    let lead = variants.first()?.manifests;
    lead.window.front()?;
    let mut s = lead.dash_mpd_open(now_ms);
    let periods: Vec<_> = lead.periods.iter().collect();
    for (i, p) in periods.iter().enumerate() {
        let end = periods.get(i + 1).map_or(u64::MAX, |n| n.start);
        let _ = write!(s, "  <Period id=\"{}\" start=\"", p.id);
        write_xs_duration_ticks(&mut s, p.start);
        s.push_str("\">\n");
        let video = lead.configs.contains_key(&p.config_id);
        if video {
            // One AdaptationSet per codec (H.264, H.265): switching within
            // a set is seamless (ISO/IEC 23009-1 5.3.3.1), across codecs it
            // is not. The first rendition's is id 0, the others 2, 3 (1 is
            // the audio's).
            let mut codecs: Vec<VideoCodec> = Vec::new();
            for c in variants.iter().filter_map(|v| codec_of(v)) {
                if !codecs.contains(&c) {
                    codecs.push(c);
                }
            }
            for (n, codec) in codecs.iter().enumerate() {
                let id = if n == 0 { 0 } else { n + 1 };
                let _ = writeln!(
                    s,
                    "    <AdaptationSet id=\"{id}\" contentType=\"video\" mimeType=\"video/mp4\" \
                     segmentAlignment=\"true\">"
                );
                for v in variants.iter().filter(|v| codec_of(v) == Some(*codec)) {
                    write_representation(&mut s, v, p.start, end);
                }
                s.push_str("    </AdaptationSet>\n");
            }
        }
        let base = variants[0].base;
        lead.write_audio_set_at(&mut s, p, true, base);
        s.push_str(PERIOD_END);
    }
    s.push_str("</MPD>\n");
    Some(s)
}

/// The video codec of a rendition's newest segment.
fn codec_of(v: &Variant<'_>) -> Option<VideoCodec> {
    let m = v.manifests;
    let w = m.window.back()?;
    m.configs.get(&w.rec.config_id).map(|c| c.codec)
}

/// A rendition's `Representation` for the period from media time `start`
/// to `end` (90 kHz): its segments that start in it. Nothing when it has
/// none.
fn write_representation(s: &mut String, v: &Variant<'_>, start: u64, end: u64) {
    let m = v.manifests;
    let mut segs = m
        .window
        .iter()
        .filter(|w| w.rec.start + super::ALIGN_SLACK >= start && w.rec.start < end)
        .peekable();
    let Some(first) = segs.peek() else {
        return;
    };
    let Some(cfg) = m.configs.get(&first.rec.config_id) else {
        return;
    };
    let (config_id, start_number) = (first.rec.config_id, first.rec.sequence);
    let segs: Vec<_> = segs.collect();
    let (bytes, ticks) = segs.iter().fold((0u128, 0u128), |(b, t), w| {
        (
            b + u128::from(w.rec.byte_size),
            t + u128::from(w.rec.duration),
        )
    });
    let bandwidth = u64::try_from((bytes * 8 * u128::from(TIMESCALE)).div_ceil(ticks.max(1)))
        .unwrap_or(u64::MAX)
        .max(1);
    s.push_str("      <Representation");
    write_attr(s, "id", v.id);
    write_attr(s, "codecs", &cfg.codec_string());
    let _ = write!(s, " width=\"{}\" height=\"{}\"", cfg.width, cfg.height);
    if cfg.frame_rate_num != 0 && cfg.frame_rate_den != 0 {
        let g = gcd(cfg.frame_rate_num, cfg.frame_rate_den);
        let (num, den) = (cfg.frame_rate_num / g, cfg.frame_rate_den / g);
        if den == 1 {
            let _ = write!(s, " frameRate=\"{num}\"");
        } else {
            let _ = write!(s, " frameRate=\"{num}/{den}\"");
        }
    }
    let _ = write!(
        s,
        " bandwidth=\"{bandwidth}\">\n        <SegmentTemplate timescale=\"{TIMESCALE}\" \
         presentationTimeOffset=\"{start}\""
    );
    write_attr(
        s,
        "initialization",
        &format!("{}{}", v.base, super::init_name(config_id)),
    );
    write_attr(s, "media", &format!("{}seg-$Number$.m4s", v.base));
    let _ = writeln!(
        s,
        " startNumber=\"{start_number}\">\n          <SegmentTimeline>"
    );
    for w in segs {
        s.push_str(&w.dash_s);
    }
    // AS_CLOSE closes the AdaptationSet too: only up to the Representation.
    let close = AS_CLOSE.trim_end_matches("    </AdaptationSet>\n");
    s.push_str(close);
}
