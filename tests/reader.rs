//! `kafka::reader::read_to_end` reads to the true high watermark: another producer's open
//! transaction does not hide records committed after it began, the read waits for it to end
//! (bounded by the time-out), and a partition that ends in transaction markers is finished
//! without waiting.

mod support;

use std::sync::mpsc;
use std::time::{Duration, Instant};

use intake::headers::Headers;
use intake::kafka::{Outgoing, TxnProducer, reader};
use rdkafka::message::Message;
use support::*;

fn send(p: &TxnProducer, topic: &str, key: &str) {
    p.send(Outgoing {
        topic,
        key: Some(key.as_bytes()),
        payload: Some(b"v"),
        headers: Headers::new().build(),
        partition: Some(0),
    })
    .unwrap();
}

fn committed(k: &intake::kafka::Kafka, topic: &str, keys: &[&str]) {
    let p = begun_producer(k, &unique("w"));
    for key in keys {
        send(&p, topic, key);
    }
    p.commit().unwrap();
}

/// Keys read from partition 0 of `topic`, and how long the read took.
fn read(
    k: &intake::kafka::Kafka,
    topic: &str,
    timeout: Duration,
) -> (rdkafka::error::KafkaResult<Vec<String>>, Duration) {
    let r = k.reader_consumer("test").unwrap();
    let mut keys = Vec::new();
    let started = Instant::now();
    let res = reader::read_to_end(&r, topic, &[0], timeout, |m| {
        keys.push(String::from_utf8(m.key().unwrap().to_vec()).unwrap());
    });
    (res.map(|_| keys), started.elapsed())
}

/// Runs `body` on a blocking thread with the name of a fresh landing topic and a Kafka client
/// for it.
async fn on_fresh_landing(body: impl FnOnce(String, intake::kafka::Kafka) + Send + 'static) {
    let (topic, k) = fresh_landing().await;
    tokio::task::spawn_blocking(move || body(topic, k))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn an_open_transaction_of_another_producer_does_not_hide_later_records() {
    on_fresh_landing(|topic, k| {
        committed(&k, &topic, &["a1", "a2"]);
        // Another producer opens a transaction and keeps it open.
        let open = begun_producer(&k, &unique("open"));
        send(&open, &topic, "pending");
        open.flush().unwrap();
        // A third one commits after it: these records lie above the last stable offset.
        committed(&k, &topic, &["b1", "b2"]);

        // The open transaction commits 2 s later, on another thread.
        let (tx, rx) = mpsc::channel();
        let closer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_secs(2));
            open.commit().unwrap();
            tx.send(Instant::now()).unwrap();
        });
        let (keys, took) = read(&k, &topic, Duration::from_secs(30));
        let committed_at = rx.recv().unwrap();
        closer.join().unwrap();
        assert_eq!(keys.unwrap(), ["a1", "a2", "pending", "b1", "b2"]);
        assert!(
            took >= Duration::from_millis(1900),
            "the read must wait for the open transaction, took {took:?}"
        );
        assert!(
            Instant::now().duration_since(committed_at) < Duration::from_secs(10),
            "the read must end soon after the transaction commits"
        );

        // Same with an abort: the aborted record is skipped, the later ones are read.
        let open = begun_producer(&k, &unique("open"));
        send(&open, &topic, "aborted");
        open.flush().unwrap();
        committed(&k, &topic, &["c1"]);
        let closer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_secs(1));
            open.abort().unwrap();
        });
        let (keys, took) = read(&k, &topic, Duration::from_secs(30));
        closer.join().unwrap();
        assert_eq!(keys.unwrap(), ["a1", "a2", "pending", "b1", "b2", "c1"]);
        assert!(took >= Duration::from_millis(900), "took {took:?}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_transaction_open_past_the_timeout_fails_the_read() {
    on_fresh_landing(|topic, k| {
        committed(&k, &topic, &["a1"]);
        let open = begun_producer(&k, &unique("open"));
        send(&open, &topic, "pending");
        open.flush().unwrap();
        let (res, took) = read(&k, &topic, Duration::from_secs(2));
        let err = res.expect_err("the read cannot reach the end while the transaction is open");
        assert!(
            matches!(
                err,
                rdkafka::error::KafkaError::MessageConsumption(
                    rdkafka::error::RDKafkaErrorCode::OperationTimedOut
                )
            ),
            "{err}"
        );
        assert!(took >= Duration::from_secs(2), "took {took:?}");
        open.abort().unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn partitions_ending_in_markers_or_empty_finish_at_once() {
    on_fresh_landing(|topic, k| {
        // Empty partition.
        let (keys, took) = read(&k, &topic, Duration::from_secs(30));
        assert_eq!(keys.unwrap(), Vec::<String>::new());
        assert!(took < Duration::from_secs(5), "took {took:?}");
        // Committed records: the partition ends in a commit marker.
        committed(&k, &topic, &["a1", "a2", "a3"]);
        let (keys, took) = read(&k, &topic, Duration::from_secs(30));
        assert_eq!(keys.unwrap(), ["a1", "a2", "a3"]);
        assert!(took < Duration::from_secs(5), "took {took:?}");
        // Then an aborted transaction: the partition ends in aborted records and a marker.
        let p = begun_producer(&k, &unique("abort"));
        send(&p, &topic, "x1");
        send(&p, &topic, "x2");
        p.flush().unwrap();
        p.abort().unwrap();
        let (keys, took) = read(&k, &topic, Duration::from_secs(30));
        assert_eq!(keys.unwrap(), ["a1", "a2", "a3"]);
        assert!(took < Duration::from_secs(5), "took {took:?}");
    })
    .await;
}
