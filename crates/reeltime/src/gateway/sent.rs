//! What one connection has sent of each import, so that nothing older or
//! equal goes out again: a snapshot read while changes were already queued,
//! a change published twice (a republished held change, a takeover), or a
//! late tick of a paused node after another node's final state.
//!
//! A socket that stays open for days sees every import its user ever
//! makes, so this map is the one per-socket state that grows with time
//! (the soak in docs/reliability.md measured it). Two things keep it small:
//! - keys are the UUIDs the server gives imports, held as 16 bytes rather
//!   than a 36-character string on the heap (about 40 bytes an entry
//!   instead of about 85); an id that is not a UUID (none today) is kept as
//!   text, exactly;
//! - at most [`FINISHED_KEPT`] imports in a final state are remembered: when
//!   one more finishes, the one that finished first on this socket is
//!   forgotten. Forgetting is safe because a finished import changes again
//!   only by a newer version (a delete), which passes anyway; what the entry
//!   still blocks is a stale copy of an older state, and such a copy
//!   arrives within the bus's delivery window, not after a thousand later
//!   imports have finished. The worst case for a forgotten import is that a
//!   resync snapshot (at most `SNAPSHOT_FINISHED` finished imports and
//!   `SNAPSHOT_REMOVED` tombstones, far fewer than are kept) repeats its
//!   final state at the same version, which clients ignore.

use std::collections::HashMap;

use rustc_hash::FxBuildHasher;

/// How many finished imports a connection remembers (see the module docs).
pub const FINISHED_KEPT: usize = 1024;

/// The last version sent of one import, and when it became final.
#[derive(Clone, Copy)]
struct Sent {
    version: u64,
    /// 0 while not final; else the connection's count of imports that had
    /// become final when this one did (the order to forget them in).
    finished_as: u32,
}

/// The last version this connection sent per import.
#[derive(Default)]
pub struct SentVersions {
    /// Fx rather than SipHash: the keys are server-made UUIDv7s (74 random
    /// bits) that no client chooses, and a zero-sized hasher keeps the
    /// struct, which every session holds, at 48 bytes.
    by_uuid: HashMap<u128, Sent, FxBuildHasher>,
    /// Ids that are not UUIDs: boxed, as they never occur today and an
    /// empty map in every session would cost 48 bytes each.
    #[allow(clippy::box_collection)] // 8 bytes per session instead of 48
    by_text: Option<Box<HashMap<Box<str>, Sent>>>,
    finished_so_far: u32,
    finished_now: u32,
}

impl SentVersions {
    /// Whether `version` of import `id` is newer than what was sent of it
    /// (anything is, when nothing was).
    #[cfg(test)]
    pub fn is_newer(&self, id: &str, version: u64) -> bool {
        self.get(id).is_none_or(|sent| version > sent.version)
    }

    /// Notes that `version` of `id` is about to be sent, if it is newer than
    /// what was; returns whether it was (and so is to be sent).
    pub fn record(&mut self, id: &str, version: u64, is_final: bool) -> bool {
        let newly_final = match self.get(id) {
            Some(sent) if version <= sent.version => return false,
            Some(sent) => is_final && sent.finished_as == 0,
            None => is_final,
        };
        let finished_as = if newly_final {
            self.finished_so_far = self.finished_so_far.saturating_add(1);
            self.finished_now += 1;
            self.finished_so_far
        } else {
            self.get(id).map_or(0, |sent| sent.finished_as)
        };
        let sent = Sent {
            version,
            finished_as,
        };
        match uuid::Uuid::try_parse(id) {
            Ok(uuid) => {
                self.by_uuid.insert(uuid.as_u128(), sent);
            }
            Err(_) => {
                self.by_text
                    .get_or_insert_with(Default::default)
                    .insert(id.into(), sent);
            }
        }
        if self.finished_now as usize > FINISHED_KEPT {
            self.forget_first_finished();
        }
        true
    }

    /// How many imports are remembered.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.by_uuid.len() + self.by_text.as_ref().map_or(0, |text| text.len())
    }

    fn get(&self, id: &str) -> Option<Sent> {
        match uuid::Uuid::try_parse(id) {
            Ok(uuid) => self.by_uuid.get(&uuid.as_u128()).copied(),
            Err(_) => self.by_text.as_ref()?.get(id).copied(),
        }
    }

    /// Drops the import that became final first. A scan of the map: it runs
    /// once per finished import only after [`FINISHED_KEPT`] are held, and
    /// keeping an order beside the map would cost every session its size.
    fn forget_first_finished(&mut self) {
        let first = |entries: &mut dyn Iterator<Item = u32>| {
            entries.filter(|finished_as| *finished_as != 0).min()
        };
        let in_uuid = first(&mut self.by_uuid.values().map(|sent| sent.finished_as));
        let in_text = self
            .by_text
            .as_ref()
            .and_then(|text| first(&mut text.values().map(|sent| sent.finished_as)));
        let oldest = match (in_uuid, in_text) {
            (Some(a), Some(b)) => a.min(b),
            (a, b) => match a.or(b) {
                Some(oldest) => oldest,
                None => return,
            },
        };
        self.by_uuid.retain(|_, sent| sent.finished_as != oldest);
        if let Some(text) = self.by_text.as_mut() {
            text.retain(|_, sent| sent.finished_as != oldest);
        }
        self.finished_now -= 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u128) -> String {
        uuid::Uuid::from_u128(n).to_string()
    }

    #[test]
    fn only_newer_versions_are_recorded() {
        let mut sent = SentVersions::default();
        assert!(sent.record(&id(1), 3, false));
        assert!(!sent.record(&id(1), 3, false));
        assert!(!sent.record(&id(1), 2, false));
        assert!(sent.is_newer(&id(1), 4));
        assert!(!sent.is_newer(&id(1), 3));
        assert!(sent.is_newer(&id(2), 1));
        assert!(sent.record("not-a-uuid", 5, false));
        assert!(!sent.record("not-a-uuid", 5, true));
        assert!(sent.record("not-a-uuid", 6, true));
        assert_eq!(sent.len(), 2);
    }

    #[test]
    fn the_first_finished_imports_are_forgotten_beyond_the_cap() {
        let mut sent = SentVersions::default();
        // An unfinished import is never forgotten, however many finish.
        sent.record(&id(0), 1, false);
        for n in 1..=(FINISHED_KEPT as u128 + 10) {
            assert!(sent.record(&id(n), 7, true));
        }
        assert_eq!(sent.len(), FINISHED_KEPT + 1);
        assert!(!sent.is_newer(&id(0), 1), "the running import is kept");
        for n in 1..=10 {
            assert!(sent.is_newer(&id(n), 7), "import {n} finished first");
        }
        assert!(!sent.is_newer(&id(11), 7));
        // A delete after completion is newer, and does not count twice.
        assert!(sent.record(&id(11), 8, true));
        assert_eq!(sent.len(), FINISHED_KEPT + 1);
        assert!(!sent.is_newer(&id(11), 8));
    }

    #[test]
    fn every_session_pays_no_more_than_the_map_it_replaced() {
        assert!(std::mem::size_of::<SentVersions>() <= 48);
    }
}
