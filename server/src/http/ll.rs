//! Low-latency HLS on the HTTP origin: blocking playlist reload
//! (`_HLS_msn`, `_HLS_part`), delta updates (`_HLS_skip`), and held
//! requests for a part named by a preload hint before it exists.
//!
//! A held request costs a task and a `watch` receiver; how many may be held
//! at once is bounded per session and server-wide
//! ([`HttpLimits::max_held_per_session`], [`HttpLimits::max_held_requests`]):
//! beyond either, the request gets `503` at once.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::serve::HttpLimits;
use crate::session::LlState;

/// What a playlist request asks beyond the playlist itself.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HlsQuery {
    pub msn: Option<u64>,
    pub part: Option<u32>,
    pub skip: bool,
}

/// Why a playlist request is refused with `400`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BadQuery {
    PartWithoutMsn,
    NotANumber(&'static str),
    MsnTooFarAhead,
    PartTooFarAhead,
}

impl std::fmt::Display for BadQuery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BadQuery::PartWithoutMsn => f.write_str("_HLS_part needs _HLS_msn"),
            BadQuery::NotANumber(k) => write!(f, "{k} must be a non-negative integer"),
            BadQuery::MsnTooFarAhead => {
                f.write_str("_HLS_msn is more than two past the last segment")
            }
            BadQuery::PartTooFarAhead => {
                f.write_str("_HLS_part is beyond the advance limit from the last part")
            }
        }
    }
}

/// Reads `_HLS_msn`, `_HLS_part`, `_HLS_skip` (`YES` or `v2`) from a query
/// string; other keys are ignored.
pub fn parse_query(q: Option<&str>) -> Result<HlsQuery, BadQuery> {
    let mut out = HlsQuery::default();
    for (k, v) in q.map(super::url_params).into_iter().flatten() {
        match k.as_str() {
            "_HLS_msn" => {
                out.msn = Some(v.parse().map_err(|_| BadQuery::NotANumber("_HLS_msn"))?);
            }
            "_HLS_part" => {
                out.part = Some(v.parse().map_err(|_| BadQuery::NotANumber("_HLS_part"))?);
            }
            "_HLS_skip" => out.skip = v == "YES" || v == "v2",
            _ => {}
        }
    }
    if out.part.is_some() && out.msn.is_none() {
        return Err(BadQuery::PartWithoutMsn);
    }
    Ok(out)
}

/// The draft's advance part limit: three part targets' worth of parts, or
/// three parts when a part target is a second or more.
pub fn advance_part_limit(part_target_ms: u64) -> u64 {
    if part_target_ms > 0 && part_target_ms < 1000 {
        3000u64.div_ceil(part_target_ms)
    } else {
        3
    }
}

/// Checks a blocking request against the live edge (`400` cases).
pub fn check_blocking(state: &LlState, msn: u64, part: Option<u32>) -> Result<(), BadQuery> {
    let pos = &state.position;
    let last = pos.last_segment.unwrap_or(0);
    if msn > last.saturating_add(2) {
        return Err(BadQuery::MsnTooFarAhead);
    }
    if let Some(p) = part {
        let limit = advance_part_limit(state.part_target_ms);
        let p = u64::from(p);
        // Beyond the open segment the parts still to come in it are
        // unknown: count from the start of the segment asked for.
        let too_far = if msn == pos.open_segment {
            p >= u64::from(pos.open_parts).saturating_add(limit)
        } else {
            msn > pos.open_segment && p >= limit
        };
        if too_far {
            return Err(BadQuery::PartTooFarAhead);
        }
    }
    Ok(())
}

/// How long a blocking request or a preload-hint request is held: three
/// target durations.
pub fn hold_limit(state: &LlState) -> Duration {
    Duration::from_secs(state.target_duration_s.saturating_mul(3).max(1))
}

/// Counts held requests, server-wide and per session.
#[derive(Debug)]
pub struct HeldRequests {
    max_total: usize,
    max_per_session: usize,
    total: AtomicUsize,
    /// Sessions with held requests only (an entry leaves at zero), so at
    /// most `max_total` entries.
    per_session: Mutex<HashMap<String, usize>>,
}

/// One held request; counted until dropped.
#[derive(Debug)]
pub struct HeldGuard {
    held: Arc<HeldRequests>,
    session: String,
}

impl HeldRequests {
    pub fn new(limits: &HttpLimits) -> Self {
        Self {
            max_total: limits.max_held_requests,
            max_per_session: limits.max_held_per_session,
            total: AtomicUsize::new(0),
            per_session: Mutex::new(HashMap::new()),
        }
    }

    /// Counts a request to hold for `session`, or `None` when a bound is
    /// reached.
    pub fn acquire(self: &Arc<Self>, session: &str) -> Option<HeldGuard> {
        let mut map = self.per_session.lock().unwrap_or_else(|p| p.into_inner());
        if self.total.load(Ordering::Relaxed) >= self.max_total {
            return None;
        }
        let n = map.entry(session.to_owned()).or_insert(0);
        if *n >= self.max_per_session {
            return None;
        }
        *n += 1;
        self.total.fetch_add(1, Ordering::Relaxed);
        Some(HeldGuard {
            held: self.clone(),
            session: session.to_owned(),
        })
    }

    /// Requests held now (all sessions).
    pub fn total(&self) -> usize {
        self.total.load(Ordering::Relaxed)
    }
}

impl Drop for HeldGuard {
    fn drop(&mut self) {
        let mut map = self
            .held
            .per_session
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(n) = map.get_mut(&self.session) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                map.remove(&self.session);
            }
        }
        self.held.total.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::playlist::LlPosition;

    fn state(last: u64, open_parts: u32) -> LlState {
        LlState {
            position: LlPosition {
                last_segment: Some(last),
                open_segment: last + 1,
                open_parts,
                next_part: 0,
            },
            part_target_ms: 234,
            target_duration_s: 3,
            ended: false,
            publisher_generation: 1,
        }
    }

    #[test]
    fn queries() {
        assert_eq!(parse_query(None), Ok(HlsQuery::default()));
        assert_eq!(
            parse_query(Some("_HLS_msn=5&_HLS_part=2&_HLS_skip=YES&token=x")),
            Ok(HlsQuery {
                msn: Some(5),
                part: Some(2),
                skip: true
            })
        );
        assert_eq!(
            parse_query(Some("_HLS_part=2")),
            Err(BadQuery::PartWithoutMsn)
        );
        assert_eq!(
            parse_query(Some("_HLS_msn=-1")),
            Err(BadQuery::NotANumber("_HLS_msn"))
        );
        assert_eq!(
            parse_query(Some("_HLS_msn=1&_HLS_part=99999999999")),
            Err(BadQuery::NotANumber("_HLS_part"))
        );
        assert!(!parse_query(Some("_HLS_skip=NO")).unwrap().skip);
    }

    #[test]
    fn advance_limits() {
        assert_eq!(advance_part_limit(234), 13);
        assert_eq!(advance_part_limit(200), 15);
        assert_eq!(advance_part_limit(1000), 3);
        assert_eq!(advance_part_limit(0), 3);
        let s = state(10, 2);
        assert_eq!(check_blocking(&s, 12, Some(0)), Ok(()));
        assert_eq!(check_blocking(&s, 13, None), Err(BadQuery::MsnTooFarAhead));
        assert_eq!(check_blocking(&s, 11, Some(14)), Ok(()));
        assert_eq!(
            check_blocking(&s, 11, Some(15)),
            Err(BadQuery::PartTooFarAhead)
        );
        assert_eq!(check_blocking(&s, 12, Some(12)), Ok(()));
        assert_eq!(
            check_blocking(&s, 12, Some(13)),
            Err(BadQuery::PartTooFarAhead)
        );
        // Past segments are answered at once whatever the part.
        assert_eq!(check_blocking(&s, 3, Some(99)), Ok(()));
    }

    #[test]
    fn held_requests_are_bounded() {
        let limits = HttpLimits {
            max_held_requests: 3,
            max_held_per_session: 2,
            ..Default::default()
        };
        let h = Arc::new(HeldRequests::new(&limits));
        let a1 = h.acquire("a").expect("a1");
        let _a2 = h.acquire("a").expect("a2");
        assert!(h.acquire("a").is_none(), "per session");
        let _b1 = h.acquire("b").expect("b1");
        assert!(h.acquire("c").is_none(), "server-wide");
        drop(a1);
        assert!(h.acquire("c").is_some());
        assert_eq!(h.total(), 2);
    }
}
