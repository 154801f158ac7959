//! The CPU cost per record of validate's pure hot path, without Kafka: split a page into
//! elements, encode each record to Avro (noting its key and version on the way), read key and
//! version, hash the raw bytes. Pages of 500 records of about 1 KiB shaped like the
//! simulator's customers, as `scripts/bench validate` lands them.
//!
//! `cargo run --release --example validate_cpu [pages]` (default 200 pages, 100 000 records),
//! from the repository root. Prints nanoseconds per record of each step, over two timed rounds
//! after a warm-up.

use std::time::Instant;

use intake::validate::{Capture, Splitter, Validator};

/// A page of `n` records starting at id `start`, with a `notes` field of 830 bytes.
fn page(n: usize, start: usize) -> Vec<u8> {
    let notes: String = (0..830)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    let records: Vec<String> = (start..start + n)
        .map(|id| {
            format!(
                r#"{{"id":"c-{id:07}","name":"Customer {id}","email":"c{id}@example.com","status":"active","created_at":"2026-11-27T10:00:00Z","updated_at":"2026-11-27T10:{:02}:00Z","version":{},"notes":"{notes}"}}"#,
                id % 60,
                id % 7
            )
        })
        .collect();
    format!(r#"{{"data":[{}],"next_cursor":"abc"}}"#, records.join(",")).into_bytes()
}

fn main() {
    let pages: usize = std::env::args()
        .nth(1)
        .map_or(200, |s| s.parse().expect("pages: a number"));
    let schema_text = std::fs::read_to_string("topics/schemas/sim/customers.avsc")
        .expect("run from the repository root");
    let schema = apache_avro::Schema::parse_str(&schema_text).expect("schema");
    let validator = Validator::new(&schema).expect("validator");
    let splitter = Splitter::new("/data", "/id", Some("/version")).expect("pointers");
    let data: Vec<Vec<u8>> = (0..pages).map(|p| page(500, p * 500)).collect();
    let records = pages * 500;
    let names = splitter.top_members();
    let mut capture = Capture::new(&names);
    let mut buf = Vec::with_capacity(4096);
    let mut check = 0u64;
    let (mut t_split, mut t_encode, mut t_hash) = (0f64, 0f64, 0f64);
    for round in 0..3 {
        let (mut s, mut e, mut h) = (0f64, 0f64, 0f64);
        for p in &data {
            let t = Instant::now();
            let elements = splitter.elements(p).expect("a page");
            s += t.elapsed().as_secs_f64();
            let t = Instant::now();
            let mut good = Vec::with_capacity(elements.len());
            for element in elements {
                buf.clear();
                validator
                    .encode_str_into(element.raw, &mut buf, &mut capture)
                    .expect("a valid record");
                check = check.wrapping_add(buf.len() as u64);
                good.push(
                    splitter
                        .record(element, capture.spans(element.raw))
                        .expect("key and version"),
                );
            }
            e += t.elapsed().as_secs_f64();
            let t = Instant::now();
            for r in &good {
                check ^= xxhash_rust::xxh3::xxh3_128(r.bytes()) as u64;
            }
            h += t.elapsed().as_secs_f64();
        }
        if round > 0 {
            t_split += s;
            t_encode += e;
            t_hash += h;
        }
    }
    let per = |t: f64| t * 1e9 / (2 * records) as f64;
    println!(
        "{records} records of ~1 KiB, ns per record: split {:.0}, encode + key/version {:.0}, hash {:.0}, total {:.0} (check {check:x})",
        per(t_split),
        per(t_encode),
        per(t_hash),
        per(t_split + t_encode + t_hash)
    );
}
