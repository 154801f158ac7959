//! What to do about a Kafka error: retry, abort the transaction, or give up the producer.
//!
//! librdkafka tells us through the transactional error flags (`is_retriable`,
//! `txn_requires_abort`, `is_fatal`); plain error codes are mapped by hand below. Fencing
//! (`_FENCED`, `PRODUCER_FENCED`, `INVALID_PRODUCER_EPOCH`) is always fatal for the producer:
//! another owner has taken over and this instance must stop writing.

use rdkafka::error::{KafkaError, RDKafkaErrorCode};

/// The classification every stage acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// Transient: the same call may succeed if repeated after a pause.
    Retry,
    /// The open transaction cannot commit: abort it and rewind the input to the last commit.
    Abort,
    /// The producer is unusable (fenced, or a fatal idempotence error): drop it. If fenced,
    /// this instance lost ownership and must not write again.
    Fatal,
    /// The record itself can never be written (e.g. larger than the broker's limit):
    /// route it to the DLQ instead of retrying.
    BadRecord,
}

/// Classifies a Kafka error.
pub fn classify(err: &KafkaError) -> ErrorClass {
    if let KafkaError::Transaction(e) = err {
        if e.is_fatal() || is_fenced(e.code()) {
            return ErrorClass::Fatal;
        }
        if e.txn_requires_abort() {
            return ErrorClass::Abort;
        }
        if e.is_retriable() {
            return ErrorClass::Retry;
        }
        return ErrorClass::Abort;
    }
    if matches!(err, KafkaError::MessageConsumptionFatal(_)) {
        return ErrorClass::Fatal;
    }
    // rdkafka gives no code for a failed admin request; its variant holds one.
    let code = match err {
        KafkaError::AdminOp(code) => Some(*code),
        _ => err.rdkafka_error_code(),
    };
    match code {
        Some(code) if is_fenced(code) => ErrorClass::Fatal,
        Some(RDKafkaErrorCode::MessageSizeTooLarge | RDKafkaErrorCode::InvalidRecord) => {
            ErrorClass::BadRecord
        }
        Some(
            RDKafkaErrorCode::QueueFull
            | RDKafkaErrorCode::RequestTimedOut
            | RDKafkaErrorCode::OperationTimedOut
            | RDKafkaErrorCode::BrokerTransportFailure
            | RDKafkaErrorCode::AllBrokersDown
            | RDKafkaErrorCode::NetworkException
            | RDKafkaErrorCode::NotCoordinator
            | RDKafkaErrorCode::CoordinatorNotAvailable
            | RDKafkaErrorCode::CoordinatorLoadInProgress
            | RDKafkaErrorCode::NotLeaderForPartition
            | RDKafkaErrorCode::LeaderNotAvailable
            | RDKafkaErrorCode::ConcurrentTransactions
            | RDKafkaErrorCode::UnknownTopicOrPartition
            | RDKafkaErrorCode::BrokerNotAvailable
            | RDKafkaErrorCode::NotController,
        ) => ErrorClass::Retry,
        Some(RDKafkaErrorCode::Fatal) => ErrorClass::Fatal,
        _ => ErrorClass::Abort,
    }
}

/// Whether the error says another producer with the same transactional id took over (or
/// this one may not use it any more).
pub(crate) fn is_fenced_error(err: &KafkaError) -> bool {
    match err {
        KafkaError::Transaction(e) => is_fenced(e.code()),
        _ => err.rdkafka_error_code().is_some_and(is_fenced),
    }
}

fn is_fenced(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::Fenced
            | RDKafkaErrorCode::ProducerFenced
            | RDKafkaErrorCode::InvalidProducerEpoch
            | RDKafkaErrorCode::InvalidProducerIdMapping
            | RDKafkaErrorCode::TransactionalIdAuthorizationFailed
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_plain_codes() {
        use ErrorClass::{Abort, BadRecord, Fatal, Retry};
        use KafkaError::{Global, MessageConsumptionFatal, MessageProduction};
        use RDKafkaErrorCode as Code;
        let cases = [
            (MessageProduction(Code::QueueFull), Retry),
            (MessageProduction(Code::MessageSizeTooLarge), BadRecord),
            (MessageProduction(Code::ProducerFenced), Fatal),
            (Global(Code::Fenced), Fatal),
            (MessageConsumptionFatal(Code::Fail), Fatal),
            (Global(Code::InvalidTransactionalState), Abort),
        ];
        for (error, class) in cases {
            assert_eq!(classify(&error), class, "{error:?}");
        }
    }
}
