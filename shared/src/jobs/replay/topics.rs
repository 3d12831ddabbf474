//! SNS on-failure destinations by topic ARN (a memory queue in tests).

use crate::sinks::dlq::{FailureDestination, SnsFailureDestination};

/// SNS DLQs by topic ARN.
pub trait Topics: Send + Sync {
    type Destination: FailureDestination;
    fn topic(&self, topic_arn: &str) -> Self::Destination;
}

impl Topics for aws_sdk_sns::Client {
    type Destination = SnsFailureDestination;

    fn topic(&self, topic_arn: &str) -> Self::Destination {
        SnsFailureDestination {
            client: self.clone(),
            topic_arn: topic_arn.to_owned(),
        }
    }
}
