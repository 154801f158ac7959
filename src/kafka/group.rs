//! Partitions that no member of a stage's group owns, and how the group gets them back.
//!
//! # The gap
//!
//! A cooperative rebalance has two rounds. Round one tells the owner of every partition that
//! moves to give it up, and assigns it to nobody; the owner revokes it (committing its open
//! transaction) and rejoins, which starts round two, where the partition gets its new owner.
//!
//! The stages' consumers are static members (`group.instance.id`), so that a restarted process
//! takes its partitions back at once. But the broker hands a static member that rejoins a
//! *stable* group its previous assignment and does not rebalance. A process killed between
//! the two rounds and restarted at once therefore never starts round two: the partitions it
//! was giving up stay with no member, and no consumer reads them, until something else makes
//! the group rebalance (a member joins or leaves, a topic grows). librdkafka offers no call
//! that asks for a rebalance.
//!
//! # The remedy
//!
//! [`watch`] runs next to the exactly-once loop of every process. Every few seconds it asks
//! the group coordinator for the group's members and their assignments. When the group is
//! stable and the same subscribed partitions are owned by no member at two looks in a row,
//! it [`nudge`]s: a short-lived dynamic member joins the group (a join always rebalances, and
//! in that rebalance every member reports what it owns, so the stranded partitions are
//! assigned), then leaves (another rebalance, in which whatever the nudging member was given
//! goes to the stages' members). The nudging member never commits an offset, so it changes
//! nothing but ownership. Each nudge is logged and counted in `intake_group_nudges_total`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, KafkaResult};

use super::eos::Tp;
use super::{Kafka, reader};
use crate::telemetry::metric;

/// How often the group is looked at.
const LOOK_EVERY: Duration = Duration::from_secs(5);
/// Longest a nudging member waits to be part of a completed rebalance.
const NUDGE_WAIT: Duration = Duration::from_secs(60);
/// Time-out of one request to the coordinator or for metadata.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the subscribed topics' partition counts are asked again.
const COUNT_EVERY: Duration = Duration::from_secs(60);

/// Looks at `group` every few seconds until `stop` is set, and nudges it when subscribed
/// partitions of `topics` stay with no member (see the module docs). Blocking: run it on a
/// thread of its own.
pub fn watch(
    kafka: &Kafka,
    stage: &'static str,
    group: &str,
    topics: &[String],
    stop: &AtomicBool,
) {
    let client = match kafka.metadata_consumer(&format!("{stage}-group-watch")) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(stage, error = %e, "cannot watch the group for stranded partitions");
            return;
        }
    };
    let mut seen: Option<Vec<Tp>> = None;
    // Partition counts, asked again once a minute (a topic may grow), not at every look.
    let mut counts: Vec<(String, i32)> = Vec::new();
    let mut counted: Option<Instant> = None;
    while sleep_unless(stop, LOOK_EVERY) {
        if counted.is_none_or(|t| t.elapsed() >= COUNT_EVERY) {
            let asked: KafkaResult<Vec<(String, i32)>> = topics
                .iter()
                .map(|t| {
                    Ok((
                        t.clone(),
                        reader::partition_count(&client, t, REQUEST_TIMEOUT)?,
                    ))
                })
                .collect();
            match asked {
                Ok(c) => (counts, counted) = (c, Some(Instant::now())),
                Err(e) => {
                    tracing::debug!(stage, error = %e, "could not count the group's partitions");
                    continue;
                }
            }
        }
        let stranded = match unowned(&client, group, &counts) {
            Ok(u) => u,
            Err(e) => {
                tracing::debug!(stage, group, error = %e, "could not look at the group");
                None
            }
        };
        match stranded {
            Some(now) if seen.as_ref() == Some(&now) => {
                tracing::warn!(stage, group, partitions = ?now,
                    "partitions of the group have had no member for two looks (a member restarted between the rounds of a cooperative rebalance); nudging the group to rebalance");
                metrics::counter!(metric::GROUP_NUDGES, "stage" => stage).increment(1);
                if let Err(e) = nudge(kafka, group, topics, stop) {
                    tracing::warn!(stage, group, error = %e, "nudging the group failed; will look again");
                }
                seen = None;
            }
            other => seen = other,
        }
    }
}

/// Sleeps `d` in short steps; false as soon as `stop` is set.
fn sleep_unless(stop: &AtomicBool, d: Duration) -> bool {
    let until = Instant::now() + d;
    while Instant::now() < until {
        if stop.load(Ordering::Relaxed) {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    !stop.load(Ordering::Relaxed)
}

/// Every member of `group` (by member id) with the partitions assigned to it, when the group
/// is stable and has members; `None` when that cannot be told (rebalancing, empty, an
/// assignment that does not parse). A static member's id starts with its
/// `group.instance.id` and a dash.
///
/// # Errors
/// The coordinator could not be asked.
pub fn assignments(client: &BaseConsumer, group: &str) -> KafkaResult<Option<Assignments>> {
    let list = client.fetch_group_list(Some(group), REQUEST_TIMEOUT)?;
    let Some(info) = list.groups().iter().find(|g| g.name() == group) else {
        return Ok(None);
    };
    if info.state() != "Stable" || info.members().is_empty() {
        return Ok(None);
    }
    let mut out = Assignments::new();
    for m in info.members() {
        let Some(assignment) = m.assignment().and_then(parse_assignment) else {
            return Ok(None);
        };
        out.insert(m.id().to_owned(), assignment);
    }
    Ok(Some(out))
}

/// Members of a stable group (member id) and their assigned partitions.
pub type Assignments = BTreeMap<String, Vec<Tp>>;

/// The partitions of `topics` (each with its partition count) that no member of `group` owns,
/// when the group is stable and has members; `None` when that cannot be told (rebalancing,
/// empty, an assignment that does not parse) or every partition has a member.
///
/// # Errors
/// The coordinator could not be asked.
pub fn unowned(
    client: &BaseConsumer,
    group: &str,
    topics: &[(String, i32)],
) -> KafkaResult<Option<Vec<Tp>>> {
    let Some(members) = assignments(client, group)? else {
        return Ok(None);
    };
    let owned: BTreeSet<&Tp> = members.values().flatten().collect();
    let unowned: Vec<Tp> = topics
        .iter()
        .flat_map(|(topic, count)| (0..*count).map(|p| (topic.clone(), p)))
        .filter(|tp| !owned.contains(tp))
        .collect();
    Ok((!unowned.is_empty()).then_some(unowned))
}

/// The partitions of a member's assignment in the consumer protocol's encoding: version
/// (i16), then an array (i32 count) of topic (i16-length string) and partitions (i32 count,
/// i32 each), then user data, which is ignored. `None` when the bytes are not that.
fn parse_assignment(bytes: &[u8]) -> Option<Vec<Tp>> {
    struct Cursor<'a>(&'a [u8]);
    impl Cursor<'_> {
        fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
            let (head, rest) = self.0.split_first_chunk::<N>()?;
            self.0 = rest;
            Some(*head)
        }
        fn i16(&mut self) -> Option<i16> {
            self.take().map(i16::from_be_bytes)
        }
        fn i32(&mut self) -> Option<i32> {
            self.take().map(i32::from_be_bytes)
        }
        fn string(&mut self) -> Option<String> {
            let len = usize::try_from(self.i16()?).ok()?;
            let s = self.0.get(..len)?;
            self.0 = &self.0[len..];
            String::from_utf8(s.to_vec()).ok()
        }
    }
    if bytes.is_empty() {
        // A member that has not been given an assignment yet (or was given none).
        return Some(Vec::new());
    }
    let mut c = Cursor(bytes);
    c.i16()?;
    let topics = c.i32()?;
    let mut out = Vec::new();
    for _ in 0..topics.max(0) {
        let topic = c.string()?;
        for _ in 0..c.i32()?.max(0) {
            out.push((topic.clone(), c.i32()?));
        }
    }
    Some(out)
}

/// Records whether the nudging member has been part of a completed rebalance.
struct Joined(AtomicBool);

impl rdkafka::ClientContext for Joined {}

impl ConsumerContext for Joined {
    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, r: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = r {
            // It reads nothing: paused, its partitions fetch no records while it owns them.
            if tpl.count() > 0
                && let Err(e) = consumer.pause(tpl)
            {
                tracing::debug!(error = %e, "pausing the nudging member's partitions");
            }
            self.0.store(true, Ordering::Relaxed);
        }
    }
}

/// Makes `group` rebalance: a dynamic member subscribed to `topics` joins, and leaves as soon
/// as its join completed (or after [`NUDGE_WAIT`]). It commits nothing.
///
/// # Errors
/// The member could not be created or subscribe.
pub fn nudge(kafka: &Kafka, group: &str, topics: &[String], stop: &AtomicBool) -> KafkaResult<()> {
    let member = kafka.group_consumer(group, None, Joined(AtomicBool::new(false)))?;
    let topics: Vec<&str> = topics.iter().map(String::as_str).collect();
    member.subscribe(&topics)?;
    let until = Instant::now() + NUDGE_WAIT;
    while !member.context().0.load(Ordering::Relaxed) {
        if Instant::now() > until || stop.load(Ordering::Relaxed) {
            return Err(KafkaError::Canceled);
        }
        // Anything fetched before the pause is dropped: it owns partitions only until it leaves.
        let _ = member.poll(Duration::from_millis(100));
    }
    // Dropping the consumer closes it: a dynamic member leaves the group, which rebalances.
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(version: i16, topics: &[(&str, &[i32])], user: &[u8]) -> Vec<u8> {
        let mut b = version.to_be_bytes().to_vec();
        b.extend((topics.len() as i32).to_be_bytes());
        for (t, ps) in topics {
            b.extend((t.len() as i16).to_be_bytes());
            b.extend(t.as_bytes());
            b.extend((ps.len() as i32).to_be_bytes());
            for p in *ps {
                b.extend(p.to_be_bytes());
            }
        }
        b.extend((user.len() as i32).to_be_bytes());
        b.extend(user);
        b
    }

    #[test]
    fn assignments_parse_to_their_partitions() {
        let b = encode(3, &[("a", &[0, 2]), ("bb", &[1])], b"sticky");
        assert_eq!(
            parse_assignment(&b),
            Some(vec![("a".into(), 0), ("a".into(), 2), ("bb".into(), 1)])
        );
        assert_eq!(parse_assignment(&encode(0, &[], b"")), Some(vec![]));
        assert_eq!(parse_assignment(&[]), Some(vec![]));
    }

    #[test]
    fn truncated_assignments_do_not_parse() {
        let b = encode(1, &[("topic", &[0, 1, 2])], b"");
        for cut in [1, 3, 6, 9, 12, 16, 20] {
            assert_eq!(parse_assignment(&b[..cut]), None, "cut at {cut}");
        }
    }
}
