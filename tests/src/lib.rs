//! Helpers for the integration tests (this package's and the CLI's): one
//! local stack shared by the whole test run, and unique resource names so
//! tests running side by side never meet. SDK clients of the stack come
//! from `rewind_local::sdk`.
//!
//! nextest runs every test in its own process, so the shared stack runs in a
//! process of its own: `local-stack`, this package's binary, or the CLI's
//! `rewind local serve`, whichever test binary starts it first (the other
//! joins it: both publish it in the same place). Each test process holds a
//! shared lock on a lease file for as long as it lives; the stack stops
//! itself once nobody has held it for a moment, so a test run leaves nothing
//! running behind it.

mod archive;
mod observe;
mod records;

pub use archive::{archive_stream, run_to_idle};
pub use observe::{TargetBatch, state_output, target_batches};
pub use records::record;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use aws_config::SdkConfig;
use rewind_engine::jobs::mapping::config::MappingConfig;
use rewind_engine::jobs::mapping::stream::StreamMapping;
use rewind_engine::model::window::StartPosition;
use rewind_engine::pipeline::lineage::PlannedShard;
use rewind_engine::sinks::lambda::options::{FunctionResponseType, MappingOptions};
use rewind_engine::sources::kinesis::resolve_stream_arn;
use rewind_local::daemon::State;
use rewind_local::{Admin, Layout};
use rustix::fs::{FlockOperation, flock};

/// The shared local stack, as a test sees it.
pub struct Stack {
    pub endpoint: String,
    pub layout: Layout,
    /// Held for the life of the test process: keeps the stack up.
    _lease: File,
}

impl Stack {
    pub fn admin(&self) -> Admin {
        Admin::new(&self.endpoint)
    }

    /// SDK configuration for every client of the stack.
    pub async fn sdk_config(&self) -> SdkConfig {
        rewind_local::sdk::config(&self.endpoint).await
    }

    /// The clients a test of the archiver needs: the stream, the bucket
    /// (path-style) and the functions.
    pub async fn archive_clients(&self) -> ArchiveClients {
        let sdk = self.sdk_config().await;
        ArchiveClients {
            kinesis: aws_sdk_kinesis::Client::new(&sdk),
            s3: rewind_local::sdk::s3_client(&sdk),
            lambda: aws_sdk_lambda::Client::new(&sdk),
        }
    }
}

/// See [`Stack::archive_clients`].
pub struct ArchiveClients {
    pub kinesis: aws_sdk_kinesis::Client,
    pub s3: aws_sdk_s3::Client,
    pub lambda: aws_sdk_lambda::Client,
}

/// What serves the shared stack: `program args… --state-file STATE --lease
/// LEASE` (the integration tests' `local-stack`, the CLI's `rewind local
/// serve`).
#[derive(Clone, Copy, Debug)]
pub struct Daemon {
    pub program: &'static str,
    pub args: &'static [&'static str],
}

/// The test run's shared stack, started by the first caller with `daemon`.
pub fn stack(daemon: Daemon) -> &'static Stack {
    static STACK: OnceLock<Stack> = OnceLock::new();
    STACK.get_or_init(|| start_or_join(daemon).expect("the shared local stack"))
}

fn start_or_join(daemon: Daemon) -> anyhow::Result<Stack> {
    let layout = Layout::find(Path::new(env!("CARGO_MANIFEST_DIR")))?;
    let dir = layout.run_dir().join("test-stack");
    std::fs::create_dir_all(&dir)?;
    // Shared lease first: from here on the stack can't decide to stop. If it
    // is stopping right now, this waits until it is gone.
    let lease = open(&dir.join("lease"))?;
    flock(&lease, FlockOperation::LockShared)?;
    let starting = open(&dir.join("start.lock"))?;
    flock(&starting, FlockOperation::LockExclusive)?;
    let state_path = dir.join("stack.json");
    let state = match State::read(&state_path) {
        Ok(state) if listening(&state.endpoint) => state,
        _ => spawn(daemon, &state_path, &dir.join("lease"), &layout)?,
    };
    flock(&starting, FlockOperation::Unlock)?;
    Ok(Stack {
        endpoint: state.endpoint,
        layout,
        _lease: lease,
    })
}

fn spawn(
    daemon: Daemon,
    state_path: &Path,
    lease: &Path,
    layout: &Layout,
) -> anyhow::Result<State> {
    let _ = std::fs::remove_file(state_path);
    std::fs::create_dir_all(layout.logs())?;
    let log = layout.logs().join("test-stack.log");
    let out = File::create(&log)?;
    let mut command = std::process::Command::new(daemon.program);
    std::os::unix::process::CommandExt::process_group(&mut command, 0);
    // Own process group and no inherited pipes: the test runner neither
    // waits for it nor kills it with the test that happened to start it.
    let mut child = command
        .args(daemon.args)
        .arg("--state-file")
        .arg(state_path)
        .arg("--lease")
        .arg(lease)
        .current_dir(&layout.root)
        .stdin(std::process::Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .spawn()
        .with_context(|| format!("starting {}", daemon.program))?;
    let started = Instant::now();
    loop {
        if let Ok(state) = State::read(state_path) {
            return Ok(state);
        }
        if let Some(status) = child.try_wait()? {
            anyhow::bail!("the shared stack exited ({status}); see {}", log.display());
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(900),
            "the shared stack not ready after 15 minutes; see {}",
            log.display()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn open(path: &Path) -> anyhow::Result<File> {
    Ok(std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)?)
}

fn listening(endpoint: &str) -> bool {
    endpoint
        .strip_prefix("http://")
        .and_then(|addr| addr.parse().ok())
        .is_some_and(|addr| {
            std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok()
        })
}

/// A name no other test (or earlier run) uses.
pub fn unique(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() % 1_000_000_000);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}-{}-{millis}-{n}", std::process::id())
}

/// A fresh scratch file path under `.local/` for a test to have a function
/// write into.
pub fn scratch_file(layout: &Layout, prefix: &str) -> PathBuf {
    let dir = layout.run_dir().join("scratch");
    let _ = std::fs::create_dir_all(&dir);
    dir.join(unique(prefix))
}

/// Runs an execution named `name` of `machine` with `input` to its end;
/// returns its output when it succeeded, and an error with the execution's
/// error and cause otherwise.
pub async fn execute(
    sfn: &aws_sdk_sfn::Client,
    machine: &str,
    name: &str,
    input: &serde_json::Value,
    limit: Duration,
) -> anyhow::Result<serde_json::Value> {
    use aws_sdk_sfn::types::ExecutionStatus;
    let described =
        rewind_local::statemachine::execute(sfn, machine, name, &input.to_string(), limit).await?;
    anyhow::ensure!(
        *described.status() == ExecutionStatus::Succeeded,
        "execution {name}: {:?} {:?} {:?}",
        described.status(),
        described.error(),
        described.cause()
    );
    Ok(serde_json::from_str(described.output().unwrap_or("null"))?)
}

/// The body of an S3 object.
pub async fn get_object(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
) -> anyhow::Result<Vec<u8>> {
    let object = s3.get_object().bucket(bucket).key(key).send().await?;
    Ok(object.body.collect().await?.into_bytes().to_vec())
}

/// One record a stream accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Accepted {
    pub shard: String,
    pub sequence: rewind_engine::model::seqno::SequenceNumber,
    pub partition_key: String,
    pub data: Vec<u8>,
}

/// Puts `records` (partition key, data) on `stream` through the engine's
/// re-injection (each key's records stored in order, only failed entries
/// retried); returns what the stream accepted, in the order it stored them.
pub async fn put_all(
    kinesis: &aws_sdk_kinesis::Client,
    stream: &str,
    records: Vec<(String, Vec<u8>)>,
) -> anyhow::Result<Vec<Accepted>> {
    let entries = records
        .into_iter()
        .map(|(key, data)| (key, None, data))
        .collect();
    put_entries(kinesis, stream, entries).await
}

/// [`put_all`] for entries that may carry an explicit hash key:
/// (partition key, explicit hash key, data).
pub async fn put_entries(
    kinesis: &aws_sdk_kinesis::Client,
    stream: &str,
    records: Vec<(String, Option<String>, Vec<u8>)>,
) -> anyhow::Result<Vec<Accepted>> {
    use rewind_engine::sinks::kinesis::{Entry, KinesisSink, ReinjectOptions, put_entries};
    let entries = records
        .into_iter()
        .map(|(partition_key, explicit_hash_key, data)| Entry {
            partition_key,
            explicit_hash_key,
            data,
        });
    let mut accepted = Vec::new();
    let sink = KinesisSink::new(kinesis.clone(), stream);
    // The local stack enforces the shard limits: throttled entries back off
    // from 200 ms, as the helper always did.
    let options = ReinjectOptions {
        base_backoff: Duration::from_millis(200),
        ..ReinjectOptions::default()
    };
    put_entries(&sink, entries, &options, |_, entry, stored| {
        accepted.push(Accepted {
            shard: stored.shard_id,
            sequence: stored.sequence_number,
            partition_key: entry.partition_key.clone(),
            data: entry.data.clone(),
        })
    })
    .await
    .with_context(|| format!("putting records on {stream}"))?;
    Ok(accepted)
}

/// Reshards `stream` to `shards` shards (uniform scaling) and waits until
/// it is active again.
pub async fn reshard(
    kinesis: &aws_sdk_kinesis::Client,
    stream: &str,
    shards: i32,
) -> anyhow::Result<()> {
    kinesis
        .update_shard_count()
        .stream_name(stream)
        .target_shard_count(shards)
        .scaling_type(aws_sdk_kinesis::types::ScalingType::UniformScaling)
        .send()
        .await?;
    Ok(rewind_local::sdk::wait_active(kinesis, stream).await?)
}

/// Creates a DynamoDB archive table (`pk`, `sk`: strings, on demand), as
/// template.yaml defines it.
pub async fn create_archive_table(
    dynamodb: &aws_sdk_dynamodb::Client,
    table: &str,
) -> anyhow::Result<()> {
    use aws_sdk_dynamodb::types::{
        AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
    };
    let mut create = dynamodb
        .create_table()
        .table_name(table)
        .billing_mode(BillingMode::PayPerRequest);
    for (name, kind) in [("pk", KeyType::Hash), ("sk", KeyType::Range)] {
        create = create
            .attribute_definitions(
                AttributeDefinition::builder()
                    .attribute_name(name)
                    .attribute_type(ScalarAttributeType::S)
                    .build()?,
            )
            .key_schema(
                KeySchemaElement::builder()
                    .attribute_name(name)
                    .key_type(kind)
                    .build()?,
            );
    }
    create.send().await?;
    Ok(())
}

/// Creates `stream` with `shards` shards and waits until it is active.
pub async fn create_stream(
    kinesis: &aws_sdk_kinesis::Client,
    stream: &str,
    shards: i32,
) -> anyhow::Result<()> {
    kinesis
        .create_stream()
        .stream_name(stream)
        .shard_count(shards)
        .send()
        .await?;
    Ok(rewind_local::sdk::wait_active(kinesis, stream).await?)
}

/// The archiver's event source mapping on `stream` as template.yaml sets it
/// up (from the start of the stream, bisect on function error, batch item
/// failures, three retries), with `batch_size` and `batching_window`, ending
/// once every shard has been idle for `idle_exit`; returns it with the
/// shards it starts from.
pub async fn archiver_mapping(
    kinesis: &aws_sdk_kinesis::Client,
    stream: &str,
    batch_size: usize,
    batching_window: Duration,
    idle_exit: Duration,
) -> anyhow::Result<(StreamMapping, Vec<PlannedShard>)> {
    let config = MappingConfig {
        starting_position: StartPosition::TrimHorizon,
        options: MappingOptions {
            batch_size,
            maximum_retry_attempts: 3,
            bisect_batch_on_function_error: true,
            function_response_types: vec![FunctionResponseType::ReportBatchItemFailures],
            ..MappingOptions::default()
        },
        batching_window,
        idle_exit: Some(idle_exit),
        ..MappingConfig::default()
    };
    let stream_arn = resolve_stream_arn(kinesis, stream).await?;
    let role = "arn:aws:iam::123456789012:role/archiver";
    Ok(StreamMapping::open(kinesis, &stream_arn, role, config).await?)
}
