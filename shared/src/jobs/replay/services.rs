//! The services a replay reaches, each by the name a request gives it: S3
//! buckets, target functions and streams, SQS and SNS on-failure
//! destinations (memory stand-ins in tests).

use crate::sinks::dlq::{FailureDestination, SnsFailureDestination, SqsFailureDestination};
use crate::sinks::kinesis::{KinesisSink, RecordSink};
use crate::sinks::lambda::invoker::{Invoker, LambdaInvoker};
use crate::sources::StreamShards;
use crate::store::{ObjectReader, ObjectStore};

/// S3 buckets by name (a memory store in tests).
pub trait Buckets: Send + Sync {
    type Store: ObjectStore + ObjectReader + crate::store::CreateNew;
    fn bucket(&self, name: &str) -> Self::Store;
}

impl Buckets for aws_sdk_s3::Client {
    type Store = crate::store::S3Store;

    fn bucket(&self, name: &str) -> Self::Store {
        crate::store::S3Store::new(self.clone(), name)
    }
}

/// Target functions by request.
pub trait Targets: Send + Sync {
    type Invoker: Invoker;
    fn invoker(&self, function_name: &str, qualifier: Option<&str>) -> Self::Invoker;
}

impl Targets for aws_sdk_lambda::Client {
    type Invoker = LambdaInvoker;

    fn invoker(&self, function_name: &str, qualifier: Option<&str>) -> Self::Invoker {
        LambdaInvoker::new(self.clone(), function_name, qualifier.map(str::to_owned))
    }
}

/// Target streams by name or ARN.
pub trait Streams: Send + Sync {
    type Sink: RecordSink;
    fn sink(&self, stream: &str) -> Self::Sink;

    /// Where an archive without shard markers asks for its stream's lineage.
    fn shards(&self) -> Option<&dyn StreamShards> {
        None
    }
}

impl Streams for aws_sdk_kinesis::Client {
    type Sink = KinesisSink;

    fn sink(&self, stream: &str) -> Self::Sink {
        KinesisSink::new(self.clone(), stream)
    }

    fn shards(&self) -> Option<&dyn StreamShards> {
        Some(self)
    }
}

/// SQS DLQs by queue URL.
pub trait Queues: Send + Sync {
    type Destination: FailureDestination;
    fn queue(&self, queue_url: &str) -> Self::Destination;
}

impl Queues for aws_sdk_sqs::Client {
    type Destination = SqsFailureDestination;

    fn queue(&self, queue_url: &str) -> Self::Destination {
        SqsFailureDestination {
            client: self.clone(),
            queue_url: queue_url.to_owned(),
        }
    }
}

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
