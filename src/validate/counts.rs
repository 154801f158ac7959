//! Per-job counts: what validate did with the records of a job's landing record, written to
//! `intake.jobs` in the same transaction as the outputs (see [`crate::jobs`]).

use crate::kafka::consumed::Consumed;
use rdkafka::error::KafkaResult;

use super::reject;
use crate::headers::{self, Headers};
use crate::jobs::CountDelta;
use crate::kafka::Outgoing;
use crate::kafka::eos::Sink;

/// Outputs of the landing record being processed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Tally {
    valid: u64,
    dead: u64,
    whole: u64,
}

impl Tally {
    /// A record went to the valid topic.
    pub(crate) fn valid(&mut self) {
        self.valid += 1;
    }

    /// A dead letter: one record (`index` Some) or the whole landing value.
    pub(crate) fn dead_letter(&mut self, index: Option<usize>) {
        match index {
            Some(_) => self.dead += 1,
            None => self.whole += 1,
        }
    }

    /// The job's count delta for `msg`, when it carries `intake.job_id`.
    pub(crate) fn delta(&self, msg: &Consumed<'_>) -> Option<CountDelta> {
        let job = headers::get_str(msg.headers(), headers::JOB_ID)?;
        let attempt = headers::get_str(msg.headers(), headers::JOB_ATTEMPT);
        let origin = reject::origin(msg.topic(), msg.partition(), msg.offset(), None);
        Some(CountDelta::validate(
            job, attempt, &origin, self.valid, self.dead, self.whole,
        ))
    }

    /// Sends the delta (if any) into the open transaction.
    pub(crate) fn send(
        &self,
        msg: &Consumed<'_>,
        jobs_topic: &str,
        sink: &mut Sink<'_>,
    ) -> KafkaResult<()> {
        let Some(d) = self.delta(msg) else {
            return Ok(());
        };
        sink.send(Outgoing {
            topic: jobs_topic,
            key: Some(d.key().as_bytes()),
            payload: Some(&d.to_json()),
            headers: Headers::new().build(),
            partition: None,
        })
    }
}
