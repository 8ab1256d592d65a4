//! What the hook learns about the host's NVIDIA driver: whether it removes a vGPU by itself when
//! the VM stops.
//!
//! Some driver versions clean up a vGPU's mdev themselves shortly after its VM exits; removing it
//! first corrupts the driver's bookkeeping until reboot, so a stop must wait for them. Others never
//! do, and every stop then waits `cleanup_wait_secs` for nothing. Which one a host has is learned,
//! per driver version (`/sys/module/nvidia/version`): a version seen cleaning up by itself even
//! once is always waited for; one seen [`STOPS_TO_LEARN`] times leaving the clean-up to us is no
//! longer waited for. The facts live in the state directory, so a reboot (which empties it) or a
//! driver upgrade (another version) starts the learning again, harmlessly.

use serde::{Deserialize, Serialize};

use crate::host::state::Locked;

/// How many stops must show a driver version leaving clean-up to us before stops stop waiting.
pub const STOPS_TO_LEARN: u32 = 3;

const FILE: &str = "driver-cleanup.json";

/// The facts about one driver version.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CleanupFacts {
    /// The driver version they are about.
    pub driver: String,
    /// Stops at which the driver left every vGPU in place for the whole wait.
    pub left_to_us: u32,
    /// Whether the driver was ever seen removing a vGPU by itself.
    pub cleans_itself: bool,
}

/// What a wait for the driver showed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// A vGPU vanished during the wait: the driver cleans up by itself.
    CleanedItself,
    /// Every vGPU was still there when the wait ended.
    LeftToUs,
}

impl CleanupFacts {
    /// The facts about `driver`, fresh when none were recorded for that version.
    pub fn load(locked: &Locked, driver: &str) -> CleanupFacts {
        locked
            .read_aux(FILE)
            .and_then(|b| serde_json::from_slice::<CleanupFacts>(&b).ok())
            .filter(|f| f.driver == driver)
            .unwrap_or_else(|| CleanupFacts {
                driver: driver.to_string(),
                ..CleanupFacts::default()
            })
    }

    /// Records them (best effort: losing them only means learning again).
    pub fn save(&self, locked: &Locked) {
        let Ok(json) = serde_json::to_vec(self) else {
            return;
        };
        if let Err(e) = locked.write_aux(FILE, &json) {
            log::warn!("could not record what the driver does at stop: {e}");
        }
    }

    /// Whether a stop must wait for the driver's own clean-up.
    pub fn must_wait(&self) -> bool {
        self.cleans_itself || self.left_to_us < STOPS_TO_LEARN
    }

    /// Takes in what one wait showed.
    pub fn observe(&mut self, seen: Seen) {
        match seen {
            Seen::CleanedItself => self.cleans_itself = true,
            Seen::LeftToUs => self.left_to_us = self.left_to_us.saturating_add(1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> CleanupFacts {
        CleanupFacts {
            driver: "570.133.10".into(),
            ..CleanupFacts::default()
        }
    }

    #[test]
    fn an_unknown_driver_is_waited_for() {
        assert!(facts().must_wait());
    }

    #[test]
    fn a_driver_that_left_clean_up_to_us_often_enough_is_no_longer_waited_for() {
        let mut f = facts();
        for _ in 1..STOPS_TO_LEARN {
            f.observe(Seen::LeftToUs);
            assert!(f.must_wait());
        }
        f.observe(Seen::LeftToUs);
        assert!(!f.must_wait());
    }

    #[test]
    fn a_driver_seen_cleaning_up_once_is_always_waited_for() {
        let mut f = facts();
        f.observe(Seen::CleanedItself);
        for _ in 0..10 {
            f.observe(Seen::LeftToUs);
        }
        assert!(f.must_wait());
    }

    #[test]
    fn facts_of_another_driver_version_are_not_used() {
        let dir = tempfile::tempdir().unwrap();
        let state = crate::host::state::StateDir::new(dir.path());
        let locked = state.lock().unwrap();
        let mut f = facts();
        f.left_to_us = STOPS_TO_LEARN;
        f.save(&locked);
        assert!(!CleanupFacts::load(&locked, "570.133.10").must_wait());
        assert!(CleanupFacts::load(&locked, "580.65.06").must_wait());
    }
}
