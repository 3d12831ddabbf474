//! Starting and stopping the whole stack: install, build the functions, start
//! moto, kinesis-mock and `cargo lambda watch` on free loopback ports, wait
//! until each answers, then serve the one endpoint in front of them. Each
//! function runs up to [`LOCAL_FUNCTION_CONCURRENCY`] invocations at once,
//! each in a process of its own, as Lambda runs them in execution
//! environments of their own.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::net::TcpListener;
use tokio::process::Command;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::info;

use crate::process::{Service, free_port};
use crate::proxy::faults::Fault;
use crate::proxy::{ACCOUNT, Backends, Proxy};
use crate::{Error, Layout, functions, install};

const READY_LIMIT: Duration = Duration::from_secs(120);
const STOP_GRACE: Duration = Duration::from_secs(5);
/// `SCRAPER_MAX_RECORDS_PER_CHUNK` of the locally served scraper.
pub const LOCAL_SCRAPER_CHUNK: u64 = 100;
/// `SCRAPER_MAX_STEP_SECONDS` of the locally served scraper. `cargo lambda
/// watch` gives no invocation a usable deadline (the scraper would assume
/// 60 s); this stands in for a short function timeout, so a slow read stops
/// on time as it would on AWS (a step reads about 4 of these 6 s). Reads at
/// the local shard limits fill a 100-record chunk in about a second, so only
/// slowed reads (a poll delay, throttling) meet it.
pub const LOCAL_SCRAPER_MAX_STEP_SECONDS: u64 = 6;
/// `ARCHIVE_BUCKET` of the locally served archiver: created with the stack,
/// so the archiver can run behind `rewind local mapping` (its archive keys
/// start with the stream's name, so streams never share objects).
pub const LOCAL_ARCHIVE_BUCKET: &str = "rewind-archive";
/// Instances of each function `cargo lambda watch` may run at once, the
/// default of [`Options::function_concurrency`]. Lambda gives every
/// concurrent invocation an execution environment of its own; ten covers a
/// mapping's largest `ParallelizationFactor` (10) on one shard, or ten shards
/// replayed side by side, while keeping a 2-core machine to a few dozen
/// processes when every function is busy. Invocations past it wait for a
/// free instance, as those past a reserved concurrency would be throttled.
/// `rewind local up --function-concurrency N` sets another (the bench's 4
/// shards at ParallelizationFactor 10 need 40).
pub const LOCAL_FUNCTION_CONCURRENCY: NonZeroUsize = NonZeroUsize::new(10).unwrap();

/// Which emulator serves Kinesis.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum KinesisBackend {
    /// kinesis-mock: faithful sequence numbers, iterators and resharding.
    #[default]
    KinesisMock,
    /// moto: much faster for volume, toy sequence numbers.
    Moto,
}

/// How to run the stack.
#[derive(Clone, Debug)]
pub struct Options {
    pub kinesis: KinesisBackend,
    /// Enforce Kinesis per-shard limits at the endpoint.
    pub shard_limits: bool,
    /// How many invocations of one function run at once, each in its own
    /// process (see [`LOCAL_FUNCTION_CONCURRENCY`]).
    pub function_concurrency: NonZeroUsize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            kinesis: KinesisBackend::KinesisMock,
            shard_limits: true,
            function_concurrency: LOCAL_FUNCTION_CONCURRENCY,
        }
    }
}

/// A running local stack; dropping it kills every process it started.
pub struct LocalStack {
    endpoint: SocketAddr,
    moto: SocketAddr,
    services: Vec<Service>,
    shutdown: watch::Sender<bool>,
    proxy: JoinHandle<()>,
}

impl LocalStack {
    /// Installs what is missing, builds the functions and starts everything.
    pub async fn start(layout: &Layout, options: Options) -> Result<Self, Error> {
        let started = Instant::now();
        let tools = install::ensure(layout).await?;
        let functions = functions::discover(layout).await?;
        functions::build(layout, &functions).await?;
        let built = started.elapsed();

        // Bound first: moto's Step Functions engine needs the endpoint's port
        // before it starts (MOTO_PORT), so its Lambda calls come back here.
        let listener = TcpListener::bind(("127.0.0.1", 0))
            .await
            .map_err(Error::io("binding the endpoint", "127.0.0.1:0"))?;
        let endpoint = listener
            .local_addr()
            .map_err(Error::io("binding the endpoint", "127.0.0.1:0"))?;
        let logs = layout.logs();

        let moto_port = free_port()?;
        let mut moto = Command::new(&tools.moto_server);
        moto.args(["-H", "127.0.0.1", "-p", &moto_port.to_string()])
            .env("MOTO_PORT", endpoint.port().to_string())
            .env("MOTO_ACCOUNT_ID", ACCOUNT)
            // What moto's Step Functions leaves out of Distributed Map, done
            // as AWS documents it (local/python/sitecustomize.py).
            .env("PYTHONPATH", layout.root.join("local").join("python"));
        let mut services = vec![Service::spawn(
            "moto",
            moto_port,
            moto,
            logs.join("moto.log"),
        )?];

        let kinesis_port = match options.kinesis {
            KinesisBackend::Moto => moto_port,
            KinesisBackend::KinesisMock => {
                let port = free_port()?;
                let mut node = Command::new("node");
                node.arg(&tools.kinesis_main)
                    .env(
                        "KINESIS_MOCK_CERT_PATH",
                        tools.kinesis_package.join("server.json"),
                    )
                    .env("KINESIS_MOCK_PLAIN_PORT", port.to_string())
                    .env("KINESIS_MOCK_TLS_PORT", free_port()?.to_string())
                    .env("AWS_ACCOUNT_ID", ACCOUNT)
                    .env("LOG_LEVEL", "WARN");
                services.push(Service::spawn(
                    "kinesis-mock",
                    port,
                    node,
                    logs.join("kinesis-mock.log"),
                )?);
                port
            }
        };

        let lambda_port = free_port()?;
        let mut watch = Command::new(&tools.cargo_lambda);
        watch
            .args([
                "lambda",
                "watch",
                "-A",
                "127.0.0.1",
                "-P",
                &lambda_port.to_string(),
            ])
            // Serve what was built: other work in the tree must not restart
            // functions under a running test.
            .arg("--ignore-changes")
            // By default cargo lambda runs one instance per function and
            // queues every other invocation behind it, so no concurrency
            // (a ParallelizationFactor, shards in parallel) could show here.
            // With a limit it starts another instance, a process of its own
            // as Lambda's execution environments are, while invocations
            // wait, and keeps it warm. (1.9.2 never sees its instances idle,
            // so a function that ever has a queue soon runs the limit's
            // worth of instances: about 10 MB each, the price of no machinery
            // of our own.)
            .args(["--concurrency", &options.function_concurrency.to_string()])
            .current_dir(&layout.root);
        // The functions inherit this environment: their SDK clients call the
        // endpoint, with the local stack's region and dummy credentials.
        watch
            .env("AWS_ENDPOINT_URL", format!("http://{endpoint}"))
            .env("AWS_REGION", "us-east-1")
            .env("AWS_DEFAULT_REGION", "us-east-1")
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env_remove("AWS_SESSION_TOKEN")
            .env_remove("AWS_PROFILE")
            // The replay function builds stream ARNs (archive sources,
            // target streams named without an ARN) in the stack's account,
            // and may read the DynamoDB archive.
            .env("REPLAY_ACCOUNT_ID", ACCOUNT)
            .env("REPLAY_DYNAMODB", "true")
            // Where the test fixture functions keep what they received.
            .env("REWIND_FIXTURE_DIR", layout.run_dir().join("fixtures"));
        // Small scraper chunks make
        // every local scrape of a few hundred records take several steps, so
        // continuations are always exercised; set the variable to override.
        if std::env::var_os("SCRAPER_MAX_RECORDS_PER_CHUNK").is_none() {
            watch.env(
                "SCRAPER_MAX_RECORDS_PER_CHUNK",
                LOCAL_SCRAPER_CHUNK.to_string(),
            );
        }
        if std::env::var_os("SCRAPER_MAX_STEP_SECONDS").is_none() {
            watch.env(
                "SCRAPER_MAX_STEP_SECONDS",
                LOCAL_SCRAPER_MAX_STEP_SECONDS.to_string(),
            );
        }
        watch.env("ARCHIVE_BUCKET", LOCAL_ARCHIVE_BUCKET);
        services.push(Service::spawn(
            "cargo-lambda",
            lambda_port,
            watch,
            logs.join("cargo-lambda.log"),
        )?);

        for service in &mut services {
            let addr = SocketAddr::from(([127, 0, 0, 1], service.port));
            service.wait_listening(addr, READY_LIMIT).await?;
        }
        let moto_addr = SocketAddr::from(([127, 0, 0, 1], moto_port));
        enable_state_machine_execution(moto_addr).await?;
        create_bucket(moto_addr, LOCAL_ARCHIVE_BUCKET).await?;

        let backends = Backends {
            moto: moto_addr,
            kinesis: SocketAddr::from(([127, 0, 0, 1], kinesis_port)),
            lambda: SocketAddr::from(([127, 0, 0, 1], lambda_port)),
        };
        let names: BTreeSet<String> = functions.into_iter().map(|f| f.name).collect();
        let proxy = Arc::new(Proxy::new(backends, names, options.shard_limits));
        let (shutdown, signal) = watch::channel(false);
        let proxy = tokio::spawn(proxy.serve(listener, signal));
        info!(
            %endpoint,
            build_ms = built.as_millis() as u64,
            total_ms = started.elapsed().as_millis() as u64,
            "local stack ready"
        );
        Ok(LocalStack {
            endpoint,
            moto: moto_addr,
            services,
            shutdown,
            proxy,
        })
    }

    /// The endpoint URL for every SDK client (`http://127.0.0.1:PORT`).
    pub fn endpoint_url(&self) -> String {
        format!("http://{}", self.endpoint)
    }

    pub fn endpoint(&self) -> SocketAddr {
        self.endpoint
    }

    /// moto's own URL, behind the endpoint: to measure the emulator alone
    /// (no shard limits, no routing), as `bin/scale` measures its
    /// GetRecords ceiling. Everything else goes through the endpoint.
    pub fn moto_url(&self) -> String {
        format!("http://{}", self.moto)
    }

    /// The endpoint's admin interface (faults, shard limits).
    pub fn admin(&self) -> Admin {
        Admin::new(&self.endpoint_url())
    }

    /// Process ids of the servers (each leads its own process group).
    pub fn pids(&self) -> Vec<u32> {
        self.services.iter().filter_map(Service::pid).collect()
    }

    /// Every port the stack listens on, the endpoint's first.
    pub fn ports(&self) -> Vec<u16> {
        let mut ports = vec![self.endpoint.port()];
        ports.extend(self.services.iter().map(|s| s.port));
        ports
    }

    /// Stops the endpoint and every process, waiting until they are gone.
    pub async fn stop(self) {
        let _ = self.shutdown.send(true);
        let _ = self.proxy.await;
        for service in self.services {
            service.stop(STOP_GRACE).await;
        }
        info!("local stack stopped");
    }
}

/// moto executes state machines only when asked to.
async fn enable_state_machine_execution(moto: SocketAddr) -> Result<(), Error> {
    let admin = Admin::new(&format!("http://{moto}"));
    admin
        .call(
            Method::POST,
            "/moto-api/config",
            Some(serde_json::json!({"stepfunctions": {"execute_state_machine": true}})),
        )
        .await
        .map(drop)
}

/// A bucket in moto (path-style `CreateBucket`, us-east-1: no body).
async fn create_bucket(moto: SocketAddr, bucket: &str) -> Result<(), Error> {
    let admin = Admin::new(&format!("http://{moto}"));
    admin
        .call(Method::PUT, &format!("/{bucket}"), None)
        .await
        .map(drop)
}

/// A client of the endpoint's `/__rewind/` admin paths, for tests and the CLI
/// (works for a stack in this process or one `rewind local up` started).
#[derive(Clone)]
pub struct Admin {
    base: String,
    client: Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
}

impl Admin {
    pub fn new(endpoint_url: &str) -> Self {
        Admin {
            base: endpoint_url.trim_end_matches('/').to_owned(),
            client: Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    /// Adds a fault rule.
    pub async fn inject(&self, fault: &Fault) -> Result<(), Error> {
        let body = serde_json::to_value(fault).map_err(|source| Error::State {
            path: "fault".into(),
            source,
        })?;
        self.call(Method::POST, "/__rewind/faults", Some(body))
            .await
            .map(drop)
    }

    /// The fault rules still in force (count rules not used up).
    pub async fn faults(&self) -> Result<Vec<Fault>, Error> {
        let value = self.call(Method::GET, "/__rewind/faults", None).await?;
        serde_json::from_value(value).map_err(|source| Error::State {
            path: "faults".into(),
            source,
        })
    }

    /// Removes the rules restricted to `matching` (one test's own), leaving
    /// those of other tests.
    pub async fn remove_faults(&self, matching: &str) -> Result<(), Error> {
        let path = format!(
            "/__rewind/faults?matching={}",
            percent_encoding::utf8_percent_encode(matching, percent_encoding::NON_ALPHANUMERIC)
        );
        self.call(Method::DELETE, &path, None).await.map(drop)
    }

    pub async fn clear_faults(&self) -> Result<(), Error> {
        self.call(Method::DELETE, "/__rewind/faults", None)
            .await
            .map(drop)
    }

    /// Turns the Kinesis per-shard limits on or off.
    pub async fn set_shard_limits(&self, enabled: bool) -> Result<(), Error> {
        let body = serde_json::json!({ "enabled": enabled });
        self.call(Method::PUT, "/__rewind/shard-limits", Some(body))
            .await
            .map(drop)
    }

    /// The endpoint's health: the functions it serves and whether limits are on.
    pub async fn health(&self) -> Result<serde_json::Value, Error> {
        self.call(Method::GET, "/__rewind/health", None).await
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<serde_json::Value, Error> {
        let url = format!("{}{path}", self.base);
        let body = body.map(|b| Bytes::from(b.to_string())).unwrap_or_default();
        let mut request = Request::new(Full::new(body));
        *request.method_mut() = method;
        *request.uri_mut() = url.parse().map_err(|_| Error::Admin {
            endpoint: self.base.clone(),
            message: format!("invalid URL {url}"),
        })?;
        request.headers_mut().insert(
            "content-type",
            http::HeaderValue::from_static("application/json"),
        );
        let response = self
            .client
            .request(request)
            .await
            .map_err(|source| Error::Http {
                url: url.clone(),
                source,
            })?;
        let status = response.status();
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(|source| Error::AdminBody {
                endpoint: self.base.clone(),
                source,
            })?
            .to_bytes();
        if !status.is_success() {
            return Err(Error::Admin {
                endpoint: self.base.clone(),
                message: format!("{status}: {}", String::from_utf8_lossy(&bytes)),
            });
        }
        Ok(serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null))
    }
}
