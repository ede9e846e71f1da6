//! Renditions of one session: each is a session of its own (id
//! `SESSION~NAME`, see [`crate::ids::rendition_id`]) with its own
//! publisher, and they share a [`RenditionGroup`] that keeps their segments
//! aligned (segment N of every rendition starts at the same time: the
//! engine's [`JoinPoint`]) and finds out when they are not.
//!
//! The first rendition to start a segment leads: every other one joins its
//! timeline. Each rendition tells the group where each of its segments
//! starts ([`RenditionGroup::segment_started`], once per segment); a
//! rendition whose segment starts elsewhere than the leader's of the same
//! number is misaligned: logged, counted in metrics, shown in `SessionInfo`
//! and left out of the multivariant playlist and the MPD.
//!
//! Lock order: a session's state, then its group (never the other way).

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::engine::pipeline::{JoinPoint, SegmentStart, ALIGN_TOLERANCE, MAX_SEGMENT_STARTS};

/// The renditions of one session id.
#[derive(Debug)]
pub struct RenditionGroup {
    /// The session id (`cam1`).
    pub session: String,
    state: Mutex<GroupState>,
}

#[derive(Debug, Default)]
struct GroupState {
    /// The rendition (name; "" for the session's own stream) whose timeline
    /// the others join.
    leader: Option<String>,
    members: BTreeMap<String, Member>,
}

#[derive(Debug, Default)]
struct Member {
    /// Started with a timeline of its own (not joining): until it leads,
    /// a rendition waiting to join waits for it.
    independent: bool,
    /// Recent segment starts, oldest first.
    starts: VecDeque<SegmentStart>,
    /// What a rendition joining this one needs (its latest, without the
    /// segment starts).
    anchor: Option<JoinPoint>,
    misaligned_segments: u64,
    /// The last segment compared with the leader's started where it did.
    aligned: bool,
    /// The publisher is gone.
    left: bool,
}

/// One rendition as `SessionInfo` and the API show it.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct RenditionView {
    /// "" for the session's own stream.
    pub name: String,
    pub session_id: String,
    pub codec: String,
    pub width: u32,
    pub height: u32,
    /// Bits per second over the listed segments: the busiest one's and the
    /// average (see [`crate::engine::playlist::group::Bandwidth`]).
    pub peak_bandwidth: u64,
    pub average_bandwidth: u64,
    pub aligned: bool,
    pub misaligned_segments: u64,
}

/// The views of a session's renditions (`members`: from
/// [`super::registry::Registry::renditions`]).
pub fn views(members: &[Arc<super::Session>]) -> Vec<RenditionView> {
    members
        .iter()
        .map(|s| {
            let name = crate::ids::rendition_of(&s.id).unwrap_or("").to_string();
            let a = s.rendition_group().map(|(g, n)| g.alignment(n));
            let m = s.manifests_snapshot();
            let bw = m.as_ref().map(|m| m.bandwidth()).unwrap_or_default();
            let info = s.info();
            let (codec, width, height) = info.config.as_ref().map_or((String::new(), 0, 0), |c| {
                (c.codec_string(), c.width, c.height)
            });
            RenditionView {
                name,
                session_id: s.id.clone(),
                codec,
                width,
                height,
                peak_bandwidth: bw.peak,
                average_bandwidth: bw.average,
                aligned: a.as_ref().is_none_or(|a| a.aligned),
                misaligned_segments: a.map_or(0, |a| a.misaligned_segments),
            }
        })
        .collect()
}

/// A rendition's alignment, for `SessionInfo` and the API.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Alignment {
    pub aligned: bool,
    pub misaligned_segments: u64,
}

/// What [`RenditionGroup::segment_started`] found.
/// What a rendition waiting to join its group should do now
/// ([`RenditionGroup::join_point`]).
#[derive(Clone, Debug, PartialEq)]
pub enum Joining {
    /// Follow the leader's timeline and segment starts.
    Follow(JoinPoint),
    /// No leader yet, but another rendition will lead: keep waiting.
    Wait,
    /// Nobody to wait for: start a timeline of its own.
    Alone,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Misaligned {
    /// The rendition whose segment starts elsewhere.
    pub rendition: String,
    pub sequence: u64,
    /// Its start and the leader's, 90 kHz.
    pub start: u64,
    pub leader_start: u64,
}

impl RenditionGroup {
    pub fn new(session: &str) -> Arc<Self> {
        Arc::new(Self {
            session: session.to_string(),
            state: Mutex::default(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, GroupState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A rendition arrives: whether it joins the others (true: the group
    /// has another live rendition; its pipeline starts with
    /// [`JoinPoint`] from [`join_point`](Self::join_point)) or starts a
    /// timeline of its own.
    pub fn enter(&self, name: &str) -> bool {
        let mut st = self.lock();
        let joins = st.members.iter().any(|(n, m)| n != name && !m.left);
        let m = st.members.entry(name.to_string()).or_default();
        *m = Member {
            independent: !joins,
            aligned: true,
            ..Member::default()
        };
        if st.leader.as_deref() == Some(name) {
            st.leader = None;
        }
        joins
    }

    /// The rendition's publisher is gone for good (its session ended).
    /// Leadership passes to a live rendition that has segments.
    pub fn leave(&self, name: &str) {
        let mut st = self.lock();
        if let Some(m) = st.members.get_mut(name) {
            m.left = true;
        }
        if st.leader.as_deref() == Some(name) {
            st.leader = st
                .members
                .iter()
                .find(|(_, m)| !m.left && m.anchor.is_some() && m.aligned)
                .map(|(n, _)| n.clone());
        }
    }

    /// For a rendition waiting to join: the leader's timeline and segment
    /// starts ([`Joining::Follow`]), [`Joining::Wait`] while there is no
    /// leader yet, [`Joining::Alone`] when there is nobody to wait for (no
    /// leader, no other rendition with a timeline of its own that will
    /// lead): it should start its own timeline.
    pub fn join_point(&self, name: &str) -> Joining {
        let st = self.lock();
        let Some(leader) = st.leader.as_ref().and_then(|l| st.members.get(l)) else {
            let someone = st
                .members
                .iter()
                .any(|(n, m)| n != name && !m.left && m.independent);
            return if someone {
                Joining::Wait
            } else {
                Joining::Alone
            };
        };
        match leader.anchor.clone() {
            Some(mut p) => {
                p.set_segment_starts(leader.starts.iter().copied().collect());
                Joining::Follow(p)
            }
            None => Joining::Wait,
        }
    }

    /// Rendition `name` started segment `start`; `anchor` is what a
    /// rendition joining it needs. The first rendition to start a segment
    /// leads. Returns the misalignment found, if any.
    pub fn segment_started(
        &self,
        name: &str,
        start: SegmentStart,
        anchor: Option<JoinPoint>,
    ) -> Option<Misaligned> {
        let mut st = self.lock();
        if st.leader.is_none() {
            st.leader = Some(name.to_string());
        }
        let leader = st.leader.clone().unwrap_or_default();
        let m = st.members.entry(name.to_string()).or_default();
        if m.starts.back().map(|s| s.sequence) == Some(start.sequence) {
            m.starts.pop_back();
        }
        m.starts.push_back(start);
        while m.starts.len() > MAX_SEGMENT_STARTS {
            m.starts.pop_front();
        }
        if anchor.is_some() {
            m.anchor = anchor;
        }
        // Compare with the leader's (or, for the leader, the others') start
        // of the same number.
        let find =
            |m: &Member, seq: u64| m.starts.iter().rev().find(|s| s.sequence == seq).copied();
        let mut found = None;
        if name == leader {
            for (n, other) in st.members.iter_mut().filter(|(n, _)| **n != leader) {
                if let Some(theirs) = find(other, start.sequence) {
                    let ok = theirs.start.abs_diff(start.start) <= ALIGN_TOLERANCE;
                    note(other, ok);
                    if !ok {
                        found = Some(Misaligned {
                            rendition: n.clone(),
                            sequence: start.sequence,
                            start: theirs.start,
                            leader_start: start.start,
                        });
                    }
                }
            }
        } else if let Some(theirs) = st
            .members
            .get(&leader)
            .and_then(|l| find(l, start.sequence))
        {
            let ok = theirs.start.abs_diff(start.start) <= ALIGN_TOLERANCE;
            if let Some(m) = st.members.get_mut(name) {
                note(m, ok);
            }
            if !ok {
                found = Some(Misaligned {
                    rendition: name.to_string(),
                    sequence: start.sequence,
                    start: start.start,
                    leader_start: theirs.start,
                });
            }
        }
        found
    }

    /// The alignment of rendition `name`.
    pub fn alignment(&self, name: &str) -> Alignment {
        let st = self.lock();
        st.members.get(name).map_or(
            Alignment {
                aligned: true,
                misaligned_segments: 0,
            },
            |m| Alignment {
                aligned: m.aligned,
                misaligned_segments: m.misaligned_segments,
            },
        )
    }

    /// The other renditions whose publishers are still there (names), and
    /// whether each is aligned.
    pub fn others(&self, name: &str) -> Vec<(String, bool)> {
        let st = self.lock();
        st.members
            .iter()
            .filter(|(n, m)| n.as_str() != name && !m.left)
            .map(|(n, m)| (n.clone(), m.aligned))
            .collect()
    }

    /// The rendition that leads, if one does.
    pub fn leader(&self) -> Option<String> {
        self.lock().leader.clone()
    }
}

fn note(m: &mut Member, ok: bool) {
    m.aligned = ok;
    if !ok {
        m.misaligned_segments += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::timing::FrameRate;

    fn start(sequence: u64, start: u64) -> SegmentStart {
        SegmentStart {
            sequence,
            start,
            discontinuity_sequence: 0,
        }
    }

    fn anchor() -> JoinPoint {
        JoinPoint {
            availability_start_ms: 1,
            capture_mapping: None,
            rate: FrameRate::new(30, 1),
            composition_shift: 0,
            target: 180_000,
            segment_starts: Vec::new(),
        }
    }

    #[test]
    fn the_first_to_start_a_segment_leads_and_others_are_compared_with_it() {
        let g = RenditionGroup::new("cam1");
        assert!(!g.enter("720p"));
        assert!(g.enter("360p"));
        // 360p waits for 720p (it has a timeline of its own coming).
        assert_eq!(g.join_point("360p"), Joining::Wait);
        assert_eq!(g.segment_started("720p", start(0, 0), Some(anchor())), None);
        assert_eq!(g.leader().as_deref(), Some("720p"));
        let Joining::Follow(p) = g.join_point("360p") else {
            panic!("360p should follow 720p");
        };
        assert_eq!(p.segment_starts, vec![start(0, 0)]);
        // Aligned, then not: reported once per segment, counted.
        assert_eq!(g.segment_started("360p", start(0, 0), None), None);
        let m = g.segment_started("360p", start(1, 270_000), None);
        assert_eq!(m, None, "the leader has no segment 1 yet");
        let m = g.segment_started("720p", start(1, 180_000), Some(anchor()));
        assert_eq!(
            m,
            Some(Misaligned {
                rendition: "360p".into(),
                sequence: 1,
                start: 270_000,
                leader_start: 180_000
            })
        );
        let a = g.alignment("360p");
        assert_eq!((a.aligned, a.misaligned_segments), (false, 1));
        assert!(g.alignment("720p").aligned);
    }

    #[test]
    fn a_lone_waiting_rendition_starts_its_own_timeline() {
        let g = RenditionGroup::new("cam1");
        assert!(!g.enter("720p"));
        assert!(g.enter("360p"));
        g.leave("720p");
        assert_eq!(g.join_point("360p"), Joining::Alone);
        // The leader leaves: an aligned live rendition with segments leads.
        let g = RenditionGroup::new("cam1");
        g.enter("a");
        g.enter("b");
        g.segment_started("a", start(0, 0), Some(anchor()));
        g.segment_started("b", start(0, 0), Some(anchor()));
        g.leave("a");
        assert_eq!(g.leader().as_deref(), Some("b"));
    }
}
