//! What heartbeats say of one peer, decided without I/O. A peer goes down only after several
//! heartbeats in a row go unanswered, and its round trip is the median of the last few, so one
//! slow beat (a loaded machine, a retransmission) neither cuts a peer off nor reorders `around`.
use std::{
    collections::{BTreeMap, VecDeque},
    time::Duration,
};

/// How many of the latest round trips the median is taken over.
pub const ROUND_TRIP_SAMPLES: usize = 8;

#[derive(Debug, Default)]
pub struct Health {
    pub up: bool,
    /// Unanswered heartbeats since the last answer.
    pub misses: u32,
    round_trips: VecDeque<Duration>,
    /// The peer's own measurements, from its last heartbeat answer.
    pub reported: BTreeMap<String, Duration>,
    pub last_error: Option<String>,
}

/// What a heartbeat changed.
#[derive(Debug, PartialEq, Eq)]
pub enum Change {
    CameUp,
    WentDown,
    None,
}

impl Health {
    /// A heartbeat was answered after `round_trip`, with the peer's own measurements.
    pub fn answered(
        &mut self,
        round_trip: Duration,
        reported: BTreeMap<String, Duration>,
    ) -> Change {
        if self.round_trips.len() == ROUND_TRIP_SAMPLES {
            self.round_trips.pop_front();
        }
        self.round_trips.push_back(round_trip);
        self.reported = reported;
        self.misses = 0;
        self.last_error = None;
        let came_up = !self.up;
        self.up = true;
        if came_up {
            Change::CameUp
        } else {
            Change::None
        }
    }

    /// A heartbeat went unanswered; the peer goes down at the `allowed`-th in a row.
    pub fn missed(&mut self, why: String, allowed: u32) -> Change {
        self.misses += 1;
        self.last_error = Some(why);
        if self.misses < allowed.max(1) || !self.up {
            return Change::None;
        }
        self.up = false;
        // A peer that comes back is measured afresh: its path may have changed.
        self.round_trips.clear();
        Change::WentDown
    }

    /// The median of the latest round trips; `None` before the first answer.
    pub fn round_trip(&self) -> Option<Duration> {
        let mut sorted: Vec<Duration> = self.round_trips.iter().copied().collect();
        sorted.sort();
        sorted.get(sorted.len() / 2).copied()
    }

    /// How far the latest round trips stray from their median (its median absolute deviation).
    pub fn spread(&self) -> Option<Duration> {
        let median = self.round_trip()?;
        let mut deviations: Vec<Duration> = self
            .round_trips
            .iter()
            .map(|r| r.abs_diff(median))
            .collect();
        deviations.sort();
        deviations.get(deviations.len() / 2).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn one_missed_heartbeat_keeps_a_peer_up_three_in_a_row_take_it_down() {
        let mut health = Health::default();
        assert_eq!(health.answered(ms(2), BTreeMap::new()), Change::CameUp);
        assert_eq!(health.missed("no answer".into(), 3), Change::None);
        assert!(health.up);
        assert_eq!(health.answered(ms(2), BTreeMap::new()), Change::None);
        assert_eq!(health.misses, 0, "an answer starts the count again");
        assert_eq!(health.missed("no answer".into(), 3), Change::None);
        assert_eq!(health.missed("no answer".into(), 3), Change::None);
        assert!(health.up);
        assert_eq!(health.missed("no answer".into(), 3), Change::WentDown);
        assert!(!health.up);
        assert_eq!(health.last_error.as_deref(), Some("no answer"));
        assert_eq!(health.round_trip(), None, "measured afresh when back");
        assert_eq!(health.missed("no answer".into(), 3), Change::None);
        assert_eq!(health.answered(ms(3), BTreeMap::new()), Change::CameUp);
    }

    #[test]
    fn one_slow_heartbeat_does_not_reorder_sites() {
        let (mut near, mut far) = (Health::default(), Health::default());
        for _ in 0..5 {
            near.answered(ms(2), BTreeMap::new());
            far.answered(ms(20), BTreeMap::new());
        }
        // The near site's path reads 70 ms once, as on a loaded machine.
        near.answered(ms(70), BTreeMap::new());
        assert_eq!(near.round_trip(), Some(ms(2)));
        assert!(near.round_trip() < far.round_trip());
        assert_eq!(near.spread(), Some(ms(0)));
        // A path that really became slower is followed within a few beats, and the spread
        // says the measurements disagree meanwhile.
        for _ in 0..3 {
            near.answered(ms(70), BTreeMap::new());
        }
        assert_eq!(near.round_trip(), Some(ms(70)));
        assert_eq!(near.spread(), Some(ms(68)));
    }
}
