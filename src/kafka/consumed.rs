//! What a stage's processor reads of one consumed record ([`Consumed`]): intake's own view of
//! it, built by the consume loop from rdkafka's message, or by hand in a unit test, so that a
//! processor's routing and parsing are tested without a broker.

use rdkafka::message::{BorrowedHeaders, BorrowedMessage, Message, OwnedHeaders};

/// One consumed record: where it was read and its key, value and headers, borrowed.
#[derive(Clone, Copy)]
pub struct Consumed<'a> {
    topic: &'a str,
    partition: i32,
    offset: i64,
    key: Option<&'a [u8]>,
    payload: Option<&'a [u8]>,
    headers: Option<&'a BorrowedHeaders>,
}

impl std::fmt::Debug for Consumed<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Where it was read only: a value may hold anything.
        f.debug_struct("Consumed")
            .field("topic", &self.topic)
            .field("partition", &self.partition)
            .field("offset", &self.offset)
            .finish_non_exhaustive()
    }
}

impl<'a> Consumed<'a> {
    /// The view of a message the consumer returned.
    pub fn of(m: &'a BorrowedMessage<'a>) -> Self {
        Self {
            topic: m.topic(),
            partition: m.partition(),
            offset: m.offset(),
            key: m.key(),
            payload: m.payload(),
            headers: m.headers(),
        }
    }

    /// A record built by hand (unit tests, replays of kept records).
    pub fn new(
        topic: &'a str,
        partition: i32,
        offset: i64,
        key: Option<&'a [u8]>,
        payload: Option<&'a [u8]>,
        headers: Option<&'a OwnedHeaders>,
    ) -> Self {
        Self {
            topic,
            partition,
            offset,
            key,
            payload,
            headers: headers.map(OwnedHeaders::as_borrowed),
        }
    }

    /// The topic it was read from.
    pub fn topic(&self) -> &'a str {
        self.topic
    }

    /// Its partition.
    pub fn partition(&self) -> i32 {
        self.partition
    }

    /// Its offset.
    pub fn offset(&self) -> i64 {
        self.offset
    }

    /// Its key, if any.
    pub fn key(&self) -> Option<&'a [u8]> {
        self.key
    }

    /// Its value (`None`: a tombstone).
    pub fn payload(&self) -> Option<&'a [u8]> {
        self.payload
    }

    /// Its headers, if any.
    pub fn headers(&self) -> Option<&'a BorrowedHeaders> {
        self.headers
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::headers::{self, Headers};

    #[test]
    fn a_record_built_by_hand_reads_like_a_consumed_one() {
        let h = Headers::new().with(headers::KIND, "page").build();
        let m = Consumed::new("t", 3, 42, Some(b"k"), Some(b"[1]"), Some(&h));
        assert_eq!((m.topic(), m.partition(), m.offset()), ("t", 3, 42));
        assert_eq!(m.key(), Some(&b"k"[..]));
        assert_eq!(m.payload(), Some(&b"[1]"[..]));
        assert_eq!(headers::get_str(m.headers(), headers::KIND), Some("page"));
        let bare = Consumed::new("t", 0, 0, None, None, None);
        assert!(bare.headers().is_none() && bare.payload().is_none());
    }
}
