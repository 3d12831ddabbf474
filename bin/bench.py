"""bin/bench's helper (boto3 from the tools venv): streams and puts, the
warm-up of the function instances, the gap analysis, the emulator measured
alone, and the functions' cold starts against a timed Lambda runtime API.

Not a test: it measures and prints, and asserts nothing.
"""

import base64
import http.server
import multiprocessing
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import boto3
from botocore.config import Config

ACCOUNT = "000000000000"
REGION = "us-east-1"


def client(service, endpoint=None):
    return boto3.client(
        service,
        endpoint_url=endpoint or os.environ["AWS_ENDPOINT_URL"],
        region_name=REGION,
        aws_access_key_id="test",
        aws_secret_access_key="test",
        # Many calls at once (the warm-up, a reader per shard), long ones
        # (a 10 MiB page), and no retry hiding a throttle.
        config=Config(max_pool_connections=64, read_timeout=600, retries={"max_attempts": 1}),
    )


def shard_limits(enabled):
    """The endpoint's Kinesis shard limits on or off (its admin path)."""
    url = os.environ["AWS_ENDPOINT_URL"].rstrip("/") + "/__rewind/shard-limits"
    body = json.dumps({"enabled": enabled}).encode()
    request = urllib.request.Request(url, data=body, method="PUT",
                                     headers={"content-type": "application/json"})
    urllib.request.urlopen(request).read()


def wait_active(kinesis, stream):
    # The waiter polls every 10 s; the emulators create a stream in well
    # under one.
    while True:
        summary = kinesis.describe_stream_summary(StreamName=stream)["StreamDescriptionSummary"]
        if summary["StreamStatus"] == "ACTIVE":
            return
        time.sleep(0.1)


def lane_of(key, lanes):
    """The engine's lane of a partition key (`pipeline::batch::lane_of`,
    FNV-1a)."""
    h = 0xCBF29CE484222325
    for byte in key.encode():
        h = ((h ^ byte) * 0x100000001B3) % (1 << 64)
    return h % lanes


def keys(records, spread):
    """The partition key of each record. `spread`: 1,000 keys in turn, as a
    stream of many keys has them. `even-lanes`: record i in lane i % 10 at
    ParallelizationFactor 10, so every 1,000 records of one shard fill the
    ten lanes with exactly 100 each (a diagnostic: it shows what the lanes
    deliver when no lane of a piece needs a second invoke)."""
    if spread == "spread":
        return [f"key-{i % 1000}" for i in range(records)]
    by_lane = [[] for _ in range(10)]
    candidate = 0
    while min(len(k) for k in by_lane) < 100:
        key = f"key-{candidate}"
        lane = by_lane[lane_of(key, 10)]
        if len(lane) < 100:
            lane.append(key)
        candidate += 1
    return [by_lane[i % 10][(i // 10) % 100] for i in range(records)]


def entries(records, sleep_ms, spread="spread"):
    """1 KiB records, each starting with `SLEEP <ms> ` (the `target` fixture
    takes that long per batch)."""
    head = f"SLEEP {sleep_ms} ".encode()
    out = []
    for i, key in enumerate(keys(records, spread)):
        data = head + json.dumps({"i": i}).encode()
        out.append({"PartitionKey": key, "Data": data + b"x" * (1024 - len(data))})
    return out


def put(kinesis, stream, records, sleep_ms, spread="spread"):
    pending = entries(records, sleep_ms, spread)
    while pending:
        batch, pending = pending[:500], pending[500:]
        while batch:
            answer = kinesis.put_records(StreamName=stream, Records=batch)
            batch = [e for e, r in zip(batch, answer["Records"]) if "ErrorCode" in r]
            if batch:
                time.sleep(0.2)


def create(stream, shards, records, sleep_ms, spread):
    """A stream of `shards` shards holding `records` records, put with the
    endpoint's limits off (putting is not what is measured) and on again."""
    kinesis = client("kinesis")
    kinesis.create_stream(StreamName=stream, ShardCount=shards)
    wait_active(kinesis, stream)
    shard_limits(False)
    try:
        put(kinesis, stream, records, sleep_ms, spread)
    finally:
        shard_limits(True)


def warm(function, instances, sleep_ms):
    """Invokes `function` `instances` times at once, until that many ran at
    the same time: `cargo lambda watch` starts an instance per waiting
    invocation (up to its limit) and keeps it, so the runs that follow
    never wait on a process start. Prints how many overlapped."""
    lam = client("lambda")
    stream = f"bench-warm-up-{os.getpid()}"
    data = base64.b64encode(f"SLEEP {sleep_ms} warm-up".encode()).decode()
    event = json.dumps({"Records": [{
        "kinesis": {"kinesisSchemaVersion": "1.0", "partitionKey": "warm", "sequenceNumber": "1",
                    "data": data, "approximateArrivalTimestamp": 1480641523.477},
        "eventSource": "aws:kinesis", "eventVersion": "1.0",
        "eventID": "shardId-000000000000:1", "eventName": "aws:kinesis:record",
        "invokeIdentityArn": f"arn:aws:iam::{ACCOUNT}:role/bench", "awsRegion": REGION,
        "eventSourceARN": f"arn:aws:kinesis:{REGION}:{ACCOUNT}:stream/{stream}"}]})
    path = os.path.join(os.environ["REWIND_FIXTURE_DIR"], "target", f"{stream}.jsonl")
    overlap = 0
    for _ in range(6):
        if os.path.exists(path):
            os.remove(path)
        with ThreadPoolExecutor(instances) as pool:
            answers = list(pool.map(lambda _: lam.invoke(FunctionName=function, Payload=event),
                                    range(instances)))
        failed = [a for a in answers if a.get("FunctionError")]
        if failed:
            sys.exit(f"warm-up: {len(failed)} invokes of {function} failed")
        with open(path) as f:
            spans = [(b["startedUs"], b["endedUs"]) for b in map(json.loads, f)]
        overlap = max(sum(1 for s, e in spans if s <= start < e) for start, _ in spans)
        if overlap >= instances:
            break
    os.remove(path)
    print(overlap)


def gaps(path):
    """Per shard, the time between a batch's end and the next one's start as
    the function saw them (ParallelizationFactor 1: one batch at a time per
    shard), in ms: the engine's time plus the local stack's round trip."""
    by_shard = {}
    with open(path) as f:
        for line in f:
            batch = json.loads(line)
            shard = batch["records"][0]["eventID"].split(":")[0]
            by_shard.setdefault(shard, []).append((batch["startedUs"], batch["endedUs"]))
    out = []
    for spans in by_shard.values():
        spans.sort()
        out += [(b[0] - a[1]) / 1000 for a, b in zip(spans, spans[1:])]
    return out


def engine_gaps(path):
    """The engine's own figure, per shard step: the `engine time between
    invokes` lines the CLI logs as JSON (RUST_LOG)."""
    steps = []
    with open(path) as f:
        for line in f:
            if not line.startswith("{"):
                continue
            fields = json.loads(line).get("fields", {})
            if fields.get("message") == "engine time between invokes":
                steps.append(fields)
    return steps


def processes():
    """pid → (parent, stat fields after the name, command line) from /proc."""
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()
        out[int(entry)] = (int(fields[1]), fields, cmdline)
    return out


def emulator_cpu(stack_pid, needle):
    """CPU seconds so far of the process under the stack `stack_pid` whose
    command line holds `needle` (moto_server, kinesis-local), with its
    descendants."""
    table = processes()
    tick = os.sysconf("SC_CLK_TCK")
    todo, found = [stack_pid], []
    while todo:
        parent = todo.pop()
        for pid, (ppid, _, cmdline) in table.items():
            if ppid == parent:
                todo.append(pid)
                if needle in cmdline:
                    found.append(pid)
    if not found:
        sys.exit(f"no process with {needle!r} under pid {stack_pid}")
    root = found[0]
    return sum(int(x) for x in table[root][1][11:13]) / tick + cpu_seconds(root)


def cpu_seconds(pid):
    """User + system CPU of the descendants of `pid`, from /proc."""
    tick = os.sysconf("SC_CLK_TCK")
    children = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    stat = f.read()
            except OSError:
                continue
            fields = stat[stat.rfind(")") + 2:].split()
            children.setdefault(int(fields[1]), []).append((int(entry), fields))
    total, todo = 0.0, [pid]
    while todo:
        parent = todo.pop()
        for child, fields in children.get(parent, []):
            # utime, stime, and cutime/cstime of reaped children.
            total += sum(int(x) for x in fields[11:15]) / tick
            todo.append(child)
    return total


# --- The emulator alone: no endpoint, no CLI, a reader process per shard.

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_emulator(backend, tools, log):
    port = free_port()
    env = dict(os.environ)
    if backend == "moto":
        command = [os.path.join(tools, "venv", "bin", "moto_server"), "-H", "127.0.0.1", "-p", str(port)]
    else:
        package = os.path.join(tools, "node", "node_modules", "kinesis-local")
        command = ["node", os.path.join(package, "main.js")]
        env.update(KINESIS_MOCK_CERT_PATH=os.path.join(package, "server.json"),
                   KINESIS_MOCK_PLAIN_PORT=str(port), KINESIS_MOCK_TLS_PORT=str(free_port()),
                   AWS_ACCOUNT_ID=ACCOUNT, LOG_LEVEL="WARN")
    process = subprocess.Popen(command, env=env, stdout=log, stderr=log, start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return process, f"http://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.2)
    process.kill()
    sys.exit(f"{backend} did not listen on {port}")


def read_shard(endpoint, stream, shard, barrier, results):
    """Every record of a shard, GetRecords with Limit 10,000 (the scrape's
    default) as fast as the emulator answers. The client and iterator are
    made before the barrier, so only the reads are timed."""
    kinesis = client("kinesis", endpoint)
    iterator = kinesis.get_shard_iterator(StreamName=stream, ShardId=shard,
                                          ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
    barrier.wait()
    started = time.perf_counter()
    records = calls = 0
    while iterator:
        page = kinesis.get_records(ShardIterator=iterator, Limit=10000)
        calls += 1
        records += len(page["Records"])
        if not page["Records"]:
            break
        iterator = page.get("NextShardIterator")
    results.put((started, time.perf_counter(), records, calls))


def emulator(backend, tools, shard_counts, records, log_path):
    """Reads a stream of each shard count straight from the emulator, every
    shard at once; prints a Markdown row per count."""
    with open(log_path, "ab") as log:
        process, endpoint = start_emulator(backend, tools, log)
        try:
            kinesis = client("kinesis", endpoint)
            for shards in shard_counts:
                stream = f"alone-{shards}-{int(time.time())}"
                kinesis.create_stream(StreamName=stream, ShardCount=shards)
                wait_active(kinesis, stream)
                put(kinesis, stream, records, 0)
                ids = [s["ShardId"] for s in kinesis.list_shards(StreamName=stream)["Shards"]]
                barrier, results = multiprocessing.Barrier(len(ids) + 1), multiprocessing.Queue()
                readers = [multiprocessing.Process(target=read_shard,
                                                   args=(endpoint, stream, i, barrier, results))
                           for i in ids]
                for reader in readers:
                    reader.start()
                barrier.wait()
                cpu0 = cpu_seconds(process.pid) + own_cpu(process.pid)
                spans = [results.get() for _ in readers]
                cpu = cpu_seconds(process.pid) + own_cpu(process.pid) - cpu0
                for reader in readers:
                    reader.join()
                # CLOCK_MONOTONIC: comparable across the reader processes.
                elapsed = max(s[1] for s in spans) - min(s[0] for s in spans)
                got = sum(s[2] for s in spans)
                calls = sum(s[3] for s in spans)
                print(f"| {backend} alone | {shards} | GetRecords, Limit 10,000, every shard at once "
                      f"| {got:,} | {calls} | {elapsed:.2f} | {got / elapsed:,.0f} | {cpu:.2f} |")
                sys.stdout.flush()
        finally:
            os.killpg(process.pid, 9)
            process.wait()


def own_cpu(pid):
    tick = os.sysconf("SC_CLK_TCK")
    with open(f"/proc/{pid}/stat") as f:
        stat = f.read()
    return sum(int(x) for x in stat[stat.rfind(")") + 2:].split()[11:13]) / tick


# --- Cold starts: a Lambda runtime API that times the runtime's calls.

class Runtime(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        # The held poll of a stopped process breaks: expected, not news.
        pass

    def __init__(self, event):
        super().__init__(("127.0.0.1", 0), RuntimeHandler)
        self.event = event
        self.first_next = None
        self.answered = None
        self.answer = None
        self.done = threading.Event()


class RuntimeHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *_):
        pass

    def do_GET(self):
        server = self.server
        if not self.path.endswith("/runtime/invocation/next"):
            return self.reply(404, b"{}")
        if server.first_next is not None:
            # The runtime's next poll after the first answer: held until
            # the process is stopped, as Lambda freezes it.
            server.done.wait(60)
            return
        server.first_next = time.perf_counter()
        body = server.event
        self.send_response(200)
        deadline = int(time.time() * 1000) + 60_000
        for name, value in [
            ("Lambda-Runtime-Aws-Request-Id", "bench-1"),
            ("Lambda-Runtime-Deadline-Ms", str(deadline)),
            ("Lambda-Runtime-Invoked-Function-Arn", f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:bench"),
            ("Lambda-Runtime-Trace-Id", "Root=1-00000000-000000000000000000000000"),
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(body))),
        ]:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        server = self.server
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        answer = "/runtime/invocation/" in self.path or self.path.endswith("/runtime/init/error")
        if answer:
            server.answered = time.perf_counter()
            kind = self.path.rsplit("/", 1)[-1]
            server.answer = f"{kind}: {body[:200].decode(errors='replace')}"
        self.reply(202, b"{}")
        if answer:
            # After the reply: the process is stopped once this is set.
            server.done.set()

    def reply(self, status, body):
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def cold(binary, event_file, runs, env_pairs):
    """Starts `binary` `runs` times against the runtime API; prints a
    Markdown row: the median (and range) of exec → first GET /next (init)
    and exec → first answer (init plus the first invocation), in ms."""
    with open(event_file, "rb") as f:
        event = f.read()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_LAMBDA")}
    env.update(
        AWS_LAMBDA_FUNCTION_NAME=os.path.basename(binary), AWS_LAMBDA_FUNCTION_VERSION="$LATEST",
        AWS_LAMBDA_FUNCTION_MEMORY_SIZE="512", AWS_LAMBDA_LOG_GROUP_NAME="/aws/lambda/bench",
        AWS_LAMBDA_LOG_STREAM_NAME="bench", AWS_REGION=REGION, AWS_DEFAULT_REGION=REGION,
        AWS_ACCESS_KEY_ID="test", AWS_SECRET_ACCESS_KEY="test")
    env.update(pair.split("=", 1) for pair in env_pairs)
    inits, firsts, answer = [], [], None
    for _ in range(runs):
        # A runtime API of its own per start: a stopped process's last
        # poll can never be taken for the next one's first.
        server = Runtime(event)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        env["AWS_LAMBDA_RUNTIME_API"] = f"127.0.0.1:{server.server_address[1]}"
        t0 = time.perf_counter()
        process = subprocess.Popen([binary], env=env, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
        answered = server.done.wait(60)
        process.kill()
        process.wait()
        server.shutdown()
        server.server_close()
        if not answered or server.first_next is None:
            sys.exit(f"{binary}: no answer within 60 s")
        inits.append((server.first_next - t0) * 1000)
        firsts.append((server.answered - t0) * 1000)
        answer = server.answer
    answer = (answer or "").replace("|", "/").replace("\n", " ")[:60]
    print(f"| {os.path.basename(binary)} | {os.path.getsize(binary):,} bytes "
          f"| {statistics.median(inits):.1f} ({min(inits):.1f}–{max(inits):.1f}) "
          f"| {statistics.median(firsts):.1f} ({min(firsts):.1f}–{max(firsts):.1f}) | {answer} |")


if __name__ == "__main__":
    command, args = sys.argv[1], sys.argv[2:]
    if command == "create":
        create(args[0], int(args[1]), int(args[2]), int(args[3]), args[4])
    elif command == "warm":
        warm(args[0], int(args[1]), int(args[2]))
    elif command == "gaps":
        g = gaps(args[0])
        print(f"{statistics.median(g):.1f}" if g else "–")
    elif command == "engine-gaps":
        steps = engine_gaps(args[0])
        # One line per shard step; a shard's median is its own, so the
        # table shows the worst shard's (and the steps' gap count).
        if steps:
            worst = max(s["median_us"] for s in steps)
            print(f"{worst / 1000:.2f} ({sum(s['gaps'] for s in steps)} gaps)")
        else:
            print("–")
    elif command == "emulator-cpu":
        print(f"{emulator_cpu(int(args[0]), args[1]):.2f}")
    elif command == "emulator":
        emulator(args[0], args[1], [int(n) for n in args[2].split()], int(args[3]), args[4])
    elif command == "cold":
        cold(args[0], args[1], int(args[2]), args[3:])
    else:
        sys.exit(f"bin/bench.py: unknown command {command}")
