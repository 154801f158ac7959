//! The merge rule: which of two versions of one record is the current one.
//!
//! Every version of a record, and every delete, carries a [`Stamp`]. Stamps are totally ordered,
//! and the current state of a key is simply the **largest stamp ever received** for it. Because
//! `max` is commutative, associative and idempotent, the final state does not depend on arrival
//! order or on duplicates (invariant 6 of `docs/INVARIANTS.md`), and a stage that emits only when the stamp
//! grows emits a strictly increasing sequence of stamps per key.
//!
//! The order is, field by field:
//!
//! 1. `version`: the stream's sequence number or cursor field. Last writer wins.
//! 2. `deleted`: at an equal version a delete beats any upsert. A tombstone carries the version of
//!    the delete, so a delete with a version `>=` the stored one wins, and only a create or update
//!    with a strictly higher version resurrects the key.
//! 3. `content_hash`: at an equal version, the upsert whose raw value bytes hash larger wins. The
//!    tie-break is arbitrary but deterministic, which is all that order independence needs. All
//!    deletes have a content hash of 0, so two deletes at one version are identical.
//!
//! # The content hash
//!
//! [`content_hash`] is XXH3-64 with seed 0 over the record's raw value bytes. The hash is written
//! to the output topic's headers and compared again after a restart, possibly by another release
//! of intake, so it must never change: XXH3's output has been frozen since xxHash 0.8.0 (2020)
//! and is specified independently of any implementation, and the `known_answers` test below pins
//! it. XXH3 was chosen over the first 8 bytes of SHA-256 because it is about 50 times faster on
//! record-sized inputs and a tie-break needs no collision resistance against an adversary: a
//! collision only means two different values at the same version are treated as identical.

use std::cmp::Ordering;

/// The version of one record, or of its deletion, as the merge rule orders them.
///
/// Field order matters: the derived [`Ord`] compares `version`, then `deleted`, then
/// `content_hash`, which is exactly the merge rule described in the module documentation.
/// Fields are private so that a delete always has a content hash of 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Stamp {
    /// The upstream version: a sequence number or the stream's cursor field.
    version: i64,
    /// Whether this stamp is a deletion (a tombstone in the output).
    deleted: bool,
    /// [`content_hash`] of the raw value bytes; 0 for a delete.
    content_hash: u64,
}

impl Stamp {
    /// A create or update at `version` whose raw value bytes hash to `content_hash`.
    #[must_use]
    pub const fn upsert(version: i64, content_hash: u64) -> Self {
        Self {
            version,
            deleted: false,
            content_hash,
        }
    }

    /// A delete at `version`.
    #[must_use]
    pub const fn delete(version: i64) -> Self {
        Self {
            version,
            deleted: true,
            content_hash: 0,
        }
    }

    /// Rebuilds a stamp from its parts, as stored in output headers. The content hash of a
    /// delete is ignored.
    #[must_use]
    pub const fn from_parts(version: i64, content_hash: u64, deleted: bool) -> Self {
        if deleted {
            Self::delete(version)
        } else {
            Self::upsert(version, content_hash)
        }
    }

    /// The upstream version.
    #[must_use]
    pub const fn version(&self) -> i64 {
        self.version
    }

    /// The content hash of the value; 0 for a delete.
    #[must_use]
    pub const fn content_hash(&self) -> u64 {
        self.content_hash
    }

    /// Whether this stamp is a deletion.
    #[must_use]
    pub const fn is_delete(&self) -> bool {
        self.deleted
    }
}

/// What to do with an incoming record, given what is stored for its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Decision {
    /// The incoming stamp is newer than the stored one (or nothing is stored): emit the record
    /// (a tombstone for a delete) and store its stamp.
    Emit,
    /// The incoming stamp is older than the stored one: drop it and count it.
    Stale,
    /// The incoming stamp equals the stored one, a duplicate delivery: drop it and count it.
    Identical,
}

/// Decides an incoming stamp against the stored one for the same key.
#[must_use]
pub fn decide(stored: Option<Stamp>, incoming: Stamp) -> Decision {
    let Some(stored) = stored else {
        // An unknown key is always emitted, deletes included: storing a delete for a key never
        // seen is what makes a later-arriving older upsert stale.
        return Decision::Emit;
    };
    match incoming.cmp(&stored) {
        Ordering::Greater => Decision::Emit,
        Ordering::Equal => Decision::Identical,
        Ordering::Less => Decision::Stale,
    }
}

/// The stable 64-bit content hash of a record's raw value bytes: XXH3-64, seed 0.
///
/// Stable across processes, machines and releases; see the module documentation.
#[must_use]
pub fn content_hash(value: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(value)
}

#[cfg(test)]
mod tests {
    use super::property::{Outcome, check_order_independence, permuted};
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    #[test]
    fn known_answers() {
        // XXH3-64, seed 0, as computed by the reference C implementation (xxHash 0.8.4). These
        // values are persisted in output headers: if this test fails, the hash changed and every
        // restored state would disagree with new input.
        assert_eq!(content_hash(b""), 0x2d06_8005_38d3_94c2);
        assert_eq!(content_hash(b"a"), 0xe6c6_32b6_1e96_4e1f);
        assert_eq!(
            content_hash(b"{\"id\":\"cus_0001234\",\"name\":\"Ada\"}"),
            0x8076_fa14_5416_d122
        );
        // Over 240 bytes takes XXH3's long-input path.
        let long: Vec<u8> = (0..5).flat_map(|_| 0..=255u8).collect();
        assert_eq!(content_hash(&long), 0x4844_b009_e164_352e);
    }

    #[test]
    fn newer_version_emits_older_is_stale_same_is_identical() {
        let stored = Some(Stamp::upsert(5, 100));
        assert_eq!(decide(stored, Stamp::upsert(6, 1)), Decision::Emit);
        assert_eq!(decide(stored, Stamp::upsert(4, u64::MAX)), Decision::Stale);
        assert_eq!(decide(stored, Stamp::upsert(5, 100)), Decision::Identical);
    }

    #[test]
    fn equal_version_larger_hash_wins() {
        let stored = Some(Stamp::upsert(5, 100));
        assert_eq!(decide(stored, Stamp::upsert(5, 101)), Decision::Emit);
        assert_eq!(decide(stored, Stamp::upsert(5, 99)), Decision::Stale);
    }

    #[test]
    fn unknown_key_always_emits() {
        assert_eq!(decide(None, Stamp::upsert(i64::MIN, 0)), Decision::Emit);
        assert_eq!(decide(None, Stamp::delete(3)), Decision::Emit);
    }

    #[test]
    fn delete_wins_at_equal_or_higher_version() {
        let stored = Some(Stamp::upsert(5, u64::MAX));
        assert_eq!(decide(stored, Stamp::delete(5)), Decision::Emit);
        assert_eq!(decide(stored, Stamp::delete(6)), Decision::Emit);
        assert_eq!(decide(stored, Stamp::delete(4)), Decision::Stale);
    }

    #[test]
    fn only_a_higher_version_resurrects() {
        let stored = Some(Stamp::delete(5));
        assert_eq!(decide(stored, Stamp::upsert(5, u64::MAX)), Decision::Stale);
        assert_eq!(decide(stored, Stamp::upsert(4, 1)), Decision::Stale);
        assert_eq!(decide(stored, Stamp::upsert(6, 0)), Decision::Emit);
    }

    #[test]
    fn deletes_at_one_version_are_identical_and_a_later_delete_emits() {
        let stored = Some(Stamp::delete(5));
        assert_eq!(decide(stored, Stamp::delete(5)), Decision::Identical);
        // A later delete moves the stored version on, so that an upsert between the two
        // versions stays stale after a restart restores the newer tombstone.
        assert_eq!(decide(stored, Stamp::delete(7)), Decision::Emit);
        assert_eq!(
            decide(Some(Stamp::delete(7)), Stamp::upsert(6, 9)),
            Decision::Stale
        );
    }

    #[test]
    fn from_parts_ignores_the_hash_of_a_delete() {
        assert_eq!(Stamp::from_parts(3, 42, true), Stamp::delete(3));
        assert_eq!(Stamp::from_parts(3, 42, false), Stamp::upsert(3, 42));
        assert_eq!(Stamp::delete(3).content_hash(), 0);
        assert!(Stamp::delete(3).is_delete());
        assert_eq!(Stamp::upsert(3, 42).version(), 3);
    }

    /// Applies deliveries in order against a plain map; returns the final state and the stamps
    /// emitted per key.
    fn run(order: &[(u8, Stamp)]) -> Outcome<u8> {
        let mut state = BTreeMap::new();
        let mut emitted: BTreeMap<u8, Vec<Stamp>> = BTreeMap::new();
        for &(key, stamp) in order {
            if decide(state.get(&key).copied(), stamp) == Decision::Emit {
                state.insert(key, stamp);
                emitted.entry(key).or_default().push(stamp);
            }
        }
        (state, emitted)
    }

    proptest! {
        /// Any permutation, with duplicates, of a set of versions of several keys yields the
        /// same final state (the largest stamp per key), and the stamps emitted per key are
        /// strictly increasing.
        #[test]
        fn order_does_not_matter((original, shuffled) in permuted(0u8..4, 40)) {
            check_order_independence(&original, &shuffled, run)?;
        }
    }
}

/// The order-independence property, shared by the merge rule's test and the state's.
#[cfg(test)]
pub(crate) mod property {
    use super::Stamp;
    use proptest::prelude::*;
    use std::collections::BTreeMap;
    use std::fmt::Debug;

    /// What a run of deliveries leaves: the final stamp per key, and the stamps emitted per key.
    pub(crate) type Outcome<K> = (BTreeMap<K, Stamp>, BTreeMap<K, Vec<Stamp>>);

    /// (key, stamp) deliveries in arrival order.
    pub(crate) type Deliveries<K> = Vec<(K, Stamp)>;

    /// Small ranges force many equal versions and equal hashes, the interesting cases.
    pub(crate) fn stamp() -> impl Strategy<Value = Stamp> {
        (0i64..6, 0u64..4, prop::bool::weighted(0.25))
            .prop_map(|(v, h, del)| Stamp::from_parts(v, h, del))
    }

    /// A set of (key, stamp) versions, each delivered 1 to 3 times, up to `versions` of them;
    /// and the same deliveries shuffled.
    pub(crate) fn permuted<K: Clone + Debug>(
        key: impl Strategy<Value = K>,
        versions: usize,
    ) -> impl Strategy<Value = (Deliveries<K>, Deliveries<K>)> {
        prop::collection::vec((key, stamp(), 1usize..=3), 1..versions)
            .prop_map(|items| {
                items
                    .into_iter()
                    .flat_map(|(k, s, n)| std::iter::repeat_n((k, s), n))
                    .collect::<Vec<_>>()
            })
            .prop_flat_map(|d| (Just(d.clone()), Just(d).prop_shuffle()))
    }

    /// Runs both orders and checks: the same final state, equal to the largest stamp per key,
    /// and strictly increasing emitted stamps per key.
    pub(crate) fn check_order_independence<K: Ord + Clone + Debug>(
        original: &[(K, Stamp)],
        shuffled: &[(K, Stamp)],
        run: impl Fn(&[(K, Stamp)]) -> Outcome<K>,
    ) -> Result<(), TestCaseError> {
        let (state_a, emitted_a) = run(original);
        let (state_b, emitted_b) = run(shuffled);
        prop_assert_eq!(&state_a, &state_b);
        let mut expected: BTreeMap<K, Stamp> = BTreeMap::new();
        for (key, stamp) in original {
            let slot = expected.entry(key.clone()).or_insert(*stamp);
            *slot = (*slot).max(*stamp);
        }
        prop_assert_eq!(&state_a, &expected);
        for emitted in emitted_a.values().chain(emitted_b.values()) {
            prop_assert!(emitted.windows(2).all(|w| w[0] < w[1]), "{emitted:?}");
        }
        Ok(())
    }
}
