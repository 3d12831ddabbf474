#!/usr/bin/env python3
"""Checks template.yaml's IAM without deploying it.

For many choices of the prefix parameters, every one within its
AllowedPattern and the template's Rules (nested ones included), the roles'
policies are resolved the way CloudFormation would resolve them and evaluated
the way IAM does (an explicit Deny wins over any Allow; no Allow, no access)
for the keys each function really writes:

- the scraper and the replay function can never write (or, for the
  scraper, read or delete) an archive object or a DynamoDB overflow object;
- each function can still do its own work under its own prefix;
- the state machines may invoke only their functions (and their versions and
  aliases), not every function whose name starts the same; their Distributed
  Maps may start, describe and stop only their own child executions and read
  only the plans (`<run>/_plan.json`) as items;
- no role is allowed anything on "*" but what AWS only grants on "*" (X-Ray's
  trace segments, and the state machines' CloudWatch Logs deliveries), and
  tracing adds nothing else;
- only the stack's alarms and its failed-executions rule may publish to the
  alarm topic, over TLS, and its key serves only them; the alarms, the rule
  and the dashboard exist and point at the topic (the stack's or the given);
- the expiry of scrape and DLQ objects never reaches the archive or another
  folder, whatever the prefixes; and a few template settings (reserved
  concurrency, retained bucket policy, the table's key, the executions'
  TimeoutSeconds) come out as intended.

Run by `bin/test template` with the tools venv (cfn-lint parses the YAML).
Exits 1 naming each failed check.
"""

from __future__ import annotations

import fnmatch
import itertools
import json
import re
import sys
from pathlib import Path

from cfnlint.decode import cfn_yaml

ROOT = Path(__file__).resolve().parents[2]
ACCOUNT = "111122223333"
REGION = "us-east-1"
BUCKET_ARN = "arn:aws:s3:::rewind-bucket"
NO_VALUE = object()
# The parameters without a default: the archived stream.
REQUIRED = {"StreamArn": f"arn:aws:kinesis:{REGION}:{ACCOUNT}:stream/orders"}


class Template:
    def __init__(self, doc: dict, parameters: dict[str, object]):
        self.doc = doc
        self.params: dict[str, object] = {}
        parameters = {**REQUIRED, **parameters}
        for name, spec in doc["Parameters"].items():
            value = parameters.get(name, spec.get("Default", ""))
            if spec["Type"] == "CommaDelimitedList" and isinstance(value, str):
                value = value.split(",")
            self.params[name] = value
        self.check_parameters()
        self.conditions = {
            name: self.condition(expr) for name, expr in doc["Conditions"].items()
        }

    def check_parameters(self) -> None:
        for name, spec in self.doc["Parameters"].items():
            pattern = spec.get("AllowedPattern")
            values = self.params[name]
            values = values if isinstance(values, list) else [values]
            for value in values:
                value = str(value)
                if pattern and not re.fullmatch(pattern, value):
                    raise ValueError(f"{name}={value!r} does not match {pattern}")
                if "MaxLength" in spec and len(value) > int(spec["MaxLength"]):
                    raise ValueError(f"{name}={value!r} is too long")
                if "AllowedValues" in spec and value not in [
                    str(v) for v in spec["AllowedValues"]
                ]:
                    raise ValueError(f"{name}={value!r} is not allowed")
        for name, rule in self.doc.get("Rules", {}).items():
            if "RuleCondition" in rule and not self.rule(rule["RuleCondition"]):
                continue
            for assertion in rule["Assertions"]:
                if not self.rule(assertion["Assert"]):
                    raise ValueError(f"rule {name}: {assertion['AssertDescription']}")

    def rule(self, expr) -> bool:
        (fn, args), = expr.items()
        if fn == "Fn::Equals":
            a, b = (self.value(x) for x in args)
            return a == b
        if fn == "Fn::Not":
            return not self.rule(args[0])
        if fn == "Fn::And":
            return all(self.rule(x) for x in args)
        if fn == "Fn::Or":
            return any(self.rule(x) for x in args)
        if fn == "Fn::Contains":
            values, needle = self.value(args[0]), self.value(args[1])
            return needle in values
        if fn == "Fn::EachMemberEquals":
            values, needle = self.value(args[0]), self.value(args[1])
            return all(v == needle for v in values)
        raise NotImplementedError(fn)

    def condition(self, expr) -> bool:
        (fn, args), = expr.items()
        if fn == "Condition":
            return self.condition(self.doc["Conditions"][args])
        if fn == "Fn::Equals":
            a, b = (self.value(x) for x in args)
            return str(a) == str(b)
        if fn == "Fn::Not":
            return not self.condition(args[0])
        if fn == "Fn::And":
            return all(self.condition(x) for x in args)
        if fn == "Fn::Or":
            return any(self.condition(x) for x in args)
        raise NotImplementedError(fn)

    def attribute(self, resource: str, attr: str) -> str:
        kind = self.doc["Resources"][resource]["Type"]
        if resource == "Bucket" and attr == "Arn":
            return BUCKET_ARN
        if kind == "AWS::Serverless::Function" and attr == "Arn":
            return f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:stack-{resource}"
        if kind == "AWS::CloudWatch::Alarm" and attr == "Arn":
            name = self.properties(resource)["AlarmName"]
            return f"arn:aws:cloudwatch:{REGION}:{ACCOUNT}:alarm:{name}"
        if kind == "AWS::Events::Rule" and attr == "Arn":
            return f"arn:aws:events:{REGION}:{ACCOUNT}:rule/stack-{resource}"
        if kind == "AWS::SQS::Queue" and attr == "QueueName":
            return f"stack-{resource}"
        if kind == "AWS::Serverless::StateMachine" and attr == "Name":
            return f"{resource}-AbC123"
        return f"arn:aws:{resource}:{attr}"

    def ref(self, name: str):
        if name == "AWS::NoValue":
            return NO_VALUE
        pseudo = {
            "AWS::Region": REGION,
            "AWS::AccountId": ACCOUNT,
            "AWS::Partition": "aws",
            "AWS::StackName": "stack",
            "AWS::URLSuffix": "amazonaws.com",
        }
        if name in pseudo:
            return pseudo[name]
        if name in self.params:
            return self.params[name]
        if name == "Bucket":
            return "rewind-bucket"
        return f"stack-{name}"

    def sub(self, text: str, extra: dict) -> str:
        def one(match):
            name = match.group(1)
            if name in extra:
                return str(extra[name])
            if "." in name:
                resource, attr = name.split(".", 1)
                return self.attribute(resource, attr)
            return str(self.ref(name))

        return re.sub(r"\$\{([^}!]+)\}", one, text)

    def value(self, node):
        if isinstance(node, dict):
            if len(node) == 1:
                (fn, args), = node.items()
                if fn == "Ref":
                    return self.ref(args)
                if fn == "Fn::Sub":
                    if isinstance(args, str):
                        return self.sub(args, {})
                    text, variables = args
                    return self.sub(text, {k: self.value(v) for k, v in variables.items()})
                if fn == "Fn::GetAtt":
                    resource, attr = args if isinstance(args, list) else args.split(".", 1)
                    return self.attribute(resource, attr)
                if fn == "Fn::If":
                    name, then, otherwise = args
                    return self.value(then if self.conditions[name] else otherwise)
                if fn == "Fn::Join":
                    sep, items = args
                    return sep.join(str(x) for x in self.value(items))
                if fn == "Fn::Split":
                    sep, text = args
                    return self.value(text).split(sep)
                if fn == "Fn::Select":
                    index, items = args
                    return self.value(items)[int(index)]
            return {
                k: v
                for k, v in ((k, self.value(v)) for k, v in node.items())
                if v is not NO_VALUE
            }
        if isinstance(node, list):
            out = []
            for item in node:
                item = self.value(item)
                if item is NO_VALUE:
                    continue
                out.append(item)
            return out
        return node

    def exists(self, resource: str) -> bool:
        condition = self.doc["Resources"][resource].get("Condition")
        return condition is None or self.conditions[condition]

    def properties(self, resource: str) -> dict:
        return self.value(self.doc["Resources"][resource].get("Properties", {}))

    def of_type(self, kind: str) -> list[str]:
        return [
            name
            for name, spec in self.doc["Resources"].items()
            if spec["Type"] == kind and self.exists(name)
        ]

    def statements(self, resource: str, policies_key: str = "Policies") -> list[dict]:
        props = self.doc["Resources"][resource]["Properties"]
        out = []
        for policy in self.value(props.get(policies_key, [])):
            document = policy.get("PolicyDocument", policy)
            statements = document["Statement"]
            out.extend(statements if isinstance(statements, list) else [statements])
        # A state machine's role (SAM names it <machine>Role) also has the
        # policies attached to it on their own.
        if self.doc["Resources"][resource]["Type"] == "AWS::Serverless::StateMachine":
            for name, spec in self.doc["Resources"].items():
                if spec["Type"] != "AWS::IAM::Policy" or not self.exists(name):
                    continue
                if {"Ref": f"{resource}Role"} not in spec["Properties"]["Roles"]:
                    continue
                statements = self.value(spec["Properties"]["PolicyDocument"])["Statement"]
                out.extend(statements if isinstance(statements, list) else [statements])
        return out


def as_list(x) -> list:
    return x if isinstance(x, list) else [x]


def matches(pattern: str, value: str) -> bool:
    # IAM wildcards: `*` any run of characters (slashes included), `?` one.
    return fnmatch.fnmatchcase(value, pattern)


def allowed(statements: list[dict], action: str, resource: str) -> bool:
    """IAM's evaluation for one action on one resource, conditions aside (the
    conditions here only narrow ListBucket and KMS, which aren't checked)."""
    decision = False
    for statement in statements:
        if not any(matches(a, action) for a in as_list(statement["Action"])):
            continue
        if not any(matches(r, resource) for r in as_list(statement["Resource"])):
            continue
        if statement["Effect"] == "Deny":
            return False
        decision = True
    return decision


def object_arn(key: str) -> str:
    return f"{BUCKET_ARN}/{key}"


def archive_keys(prefix: str) -> list[str]:
    return [
        f"{prefix}/stream=orders/dt=2026-12-01/hour=09/shardId-000000000001/"
        "49590338271490256608559692538361571095921575989136588898-"
        "49590338271490256608559692538361571095921575989136588899.jsonl.gz",
        f"{prefix}/overflow/stream=orders/shardId-000000000001/4959033827149.bin",
    ]


def check(failures: list[str], label: str, ok: bool, what: str) -> None:
    if not ok:
        failures.append(f"{label}: {what}")


def check_prefixes(doc: dict, failures: list[str]) -> int:
    segments = ["archive", "scrapes", "dlq", "data", "a.b", "x-y_z"]
    candidates = set(segments)
    for a, b in itertools.product(segments, repeat=2):
        candidates.add(f"{a}/{b}")
    candidates |= {"data/archive/v1", "scrapes/archive/stream"}
    checked = 0
    for archive, scrape, replay in itertools.product(sorted(candidates), repeat=3):
        # Keep the run short but cover every nesting: each pair related as
        # equal, parent, child or unrelated.
        if not (
            archive in segments
            or scrape in segments
            or replay in segments
            or archive.startswith(scrape + "/")
            or archive.startswith(replay + "/")
        ):
            continue
        params = {"ArchivePrefix": archive, "ScrapePrefix": scrape, "ReplayPrefix": replay,
                  "ScrapeExpiryDays": 30, "DlqExpiryDays": 7}
        try:
            template = Template(doc, params)
        except ValueError:
            continue  # refused before any work, as CloudFormation would
        checked += 1
        label = f"ArchivePrefix={archive} ScrapePrefix={scrape} ReplayPrefix={replay}"
        scraper = template.statements("ScraperRole")
        replayer = template.statements("ReplayRole")
        archiver = template.statements("ArchiverRole")
        check_lifecycle(template, archive, scrape, replay, label, failures)
        for key in archive_keys(archive):
            for action in ("s3:PutObject", "s3:DeleteObject", "s3:GetObject"):
                check(failures, label, not allowed(scraper, action, object_arn(key)),
                      f"the scraper may {action} archive object {key}")
            for action in ("s3:PutObject", "s3:DeleteObject"):
                check(failures, label, not allowed(replayer, action, object_arn(key)),
                      f"the replay function may {action} archive object {key}")
            check(failures, label, allowed(archiver, "s3:PutObject", object_arn(key)),
                  f"the archiver may not write {key}")
            check(failures, label, allowed(replayer, "s3:GetObject", object_arn(key)),
                  f"the replay function may not read the archive ({key})")
        # Their own work still works whatever the nesting: a shard's chunk,
        # progress and manifest; a DLQ object and a shard's checkpoint.
        for key in (f"{scrape}/run-1/shardId-000000000001/0-1-2.jsonl.gz",
                    f"{scrape}/run-1/manifest.json"):
            for action in ("s3:PutObject", "s3:GetObject", "s3:DeleteObject"):
                check(failures, label, allowed(scraper, action, object_arn(key)),
                      f"the scraper may not {action} its own {key}")
        for key in (f"{replay}/aws/lambda/run-1/shardId-000000000001/2026/12/01/09/x",
                    f"{replay}/replays/run-1/shardId-000000000001/_checkpoint.json"):
            check(failures, label, allowed(replayer, "s3:PutObject", object_arn(key)),
                  f"the replay function may not write its own {key}")
        check_plan_reads(template, archive, scrape, replay, label, failures)
    return checked


def check_plan_reads(template: Template, archive: str, scrape: str, replay: str, label: str,
                     failures: list[str]) -> None:
    """The state machines' Distributed Maps read their items (the plans the
    scraper and the replay function write) and nothing else."""
    scrape_plan = f"{scrape}/run-1/_plan.json"
    replay_plan = f"{replay}/replays/run-1/_plan.json"
    others = archive_keys(archive) + [
        f"{scrape}/run-1/shardId-000000000001/0-1-2.jsonl.gz",
        f"{scrape}/run-1/manifest.json",
        f"{replay}/aws/lambda/run-1/shardId-000000000001/2026/12/01/09/x",
        f"{replay}/replays/run-1/shardId-000000000001/_progress.json",
    ]
    for machine, plans in (("ScrapeStateMachine", [scrape_plan]),
                           ("ReplayStateMachine", [scrape_plan, replay_plan])):
        statements = template.statements(machine)
        for key in plans:
            check(failures, f"{label} {machine}", allowed(statements, "s3:GetObject", object_arn(key)),
                  f"may not read its Map's items {key}")
        for key in others:
            # A key under a plan's folder can end in _plan.json only if it is
            # one (the archive's and chunks' names never do).
            for action in ("s3:GetObject", "s3:PutObject", "s3:DeleteObject"):
                check(failures, f"{label} {machine}", not allowed(statements, action, object_arn(key)),
                      f"may {action} {key}")
        # (Nested prefixes put one's plans in the other's folder.)
        nested = replay.startswith(scrape + "/") or scrape.startswith(replay + "/")
        if machine == "ScrapeStateMachine" and not nested:
            check(failures, f"{label} {machine}", not allowed(statements, "s3:GetObject",
                                                               object_arn(replay_plan)),
                  f"may read the replay's {replay_plan}")


def check_map_grants(doc: dict, failures: list[str]) -> None:
    """Each state machine may start, describe and stop its own Distributed
    Map children only (as
    https://docs.aws.amazon.com/step-functions/latest/dg/iam-policies-eg-dist-map.html
    lists): not the other machine's, not its own top-level executions."""
    template = Template(doc, {})
    for machine, other in (("ScrapeStateMachine", "ReplayStateMachine"),
                           ("ReplayStateMachine", "ScrapeStateMachine")):
        statements = template.statements(machine)
        execution = lambda m, rest: (  # noqa: E731
            f"arn:aws:states:{REGION}:{ACCOUNT}:execution:{template.attribute(m, 'Name')}{rest}")
        check(failures, machine, allowed(statements, "states:StartExecution", template.ref(machine)),
              "may not start its Map's child executions")
        check(failures, machine, not allowed(statements, "states:StartExecution", template.ref(other)),
              f"may start executions of {other}")
        child = execution(machine, "/ShardsMap:0c7a9b1e-0f3e-4b7e-9a35-1f2d3c4b5a69")
        for action in ("states:DescribeExecution", "states:StopExecution"):
            check(failures, machine, allowed(statements, action, child), f"may not {action} {child}")
            for arn in (execution(other, "/ShardsMap:0c7a9b1e"), execution(machine, ":run-1")):
                check(failures, machine, not allowed(statements, action, arn), f"may {action} {arn}")


def check_refusals(doc: dict, failures: list[str]) -> None:
    refused = [
        {"ScrapePrefix": "archive"},
        {"ReplayPrefix": "archive"},
        {"ScrapePrefix": "dlq"},
        {"ScrapePrefix": "*"},
        {"ReplayPrefix": "dlq/*"},
        {"ScrapePrefix": "scrapes/"},
        {"ReplayTargetFunctionArns": f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:a,,"
                                     f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:b"},
        {"ReplayTargetStreamArns": f"arn:aws:kinesis:{REGION}:{ACCOUNT}:stream/a,"},
        {"ScrapeStreamArns": f",arn:aws:kinesis:{REGION}:{ACCOUNT}:stream/a"},
        {"AlarmTopicArn": f"arn:aws:sns:{REGION}:{ACCOUNT}:ops", "AlarmEmail": "ops@example.com"},
        {"AlarmEmail": "not an address"},
    ]
    for params in refused:
        try:
            Template(doc, params)
        except ValueError:
            continue
        failures.append(f"{params} was accepted; it must be refused before any work")
    accepted = [
        {},
        {"ReplayTargetFunctionArns": f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:a,"
                                     f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:b"},
    ]
    for params in accepted:
        try:
            Template(doc, params)
        except ValueError as error:
            failures.append(f"{params} was refused ({error}); it is valid")


def check_invoke_grants(doc: dict, failures: list[str]) -> None:
    targets = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:orders-consumer"
    template = Template(doc, {"ReplayTargetFunctionArns": targets})
    replay_fn = template.attribute("ReplayFunction", "Arn")
    scraper_fn = template.attribute("ScraperFunction", "Arn")
    cases = [
        ("ScrapeStateMachine", scraper_fn, [replay_fn]),
        ("ReplayStateMachine", replay_fn, []),
        ("ReplayStateMachine", scraper_fn, []),
    ]
    for machine, own, others in cases:
        statements = template.statements(machine)
        for arn in (own, f"{own}:7", f"{own}:live"):
            check(failures, machine, allowed(statements, "lambda:InvokeFunction", arn),
                  f"may not invoke {arn}")
        for arn in others + [f"{own}-other", f"{own}x"]:
            check(failures, machine, not allowed(statements, "lambda:InvokeFunction", arn),
                  f"may invoke {arn}")
    role = template.statements("ReplayRole")
    # GetFunctionConfiguration (the target's role as invokeIdentityArn, its
    # full ARN in the DLQ) on exactly what it may invoke.
    for action in ("lambda:InvokeFunction", "lambda:GetFunctionConfiguration"):
        for arn in (targets, f"{targets}:3", f"{targets}:prod"):
            check(failures, "ReplayRole", allowed(role, action, arn),
                  f"may not {action} {arn}")
        for arn in (f"{targets}-v2", f"{targets}x", replay_fn, scraper_fn):
            check(failures, "ReplayRole", not allowed(role, action, arn),
                  f"may {action} {arn}")
    # Without targets, nothing at all.
    empty = Template(doc, {}).statements("ReplayRole")
    for action in ("lambda:InvokeFunction", "lambda:GetFunctionConfiguration"):
        for arn in (targets, replay_fn):
            check(failures, "ReplayRole", not allowed(empty, action, arn),
                  f"may {action} {arn} with no ReplayTargetFunctionArns")


def check_dlq_topic(doc: dict, failures: list[str]) -> None:
    """sns:Publish for the replay function on the ReplayDlqTopicArn topic
    alone, and on nothing without it (never the alarm topic)."""
    dlq_topic = f"arn:aws:sns:{REGION}:{ACCOUNT}:replay-dlq"
    others = [f"{dlq_topic}-2", f"arn:aws:sns:{REGION}:{ACCOUNT}:ops", "*"]
    for params in ({}, {"AlarmTopicArn": TOPIC}):
        with_topic = Template(doc, {**params, "ReplayDlqTopicArn": dlq_topic})
        alarm_topic = with_topic.ref("AlarmTopic") if "AlarmTopicArn" not in params else TOPIC
        role = with_topic.statements("ReplayRole")
        check(failures, "ReplayRole", allowed(role, "sns:Publish", dlq_topic),
              f"may not publish to {dlq_topic} ({params})")
        for arn in others + [alarm_topic]:
            check(failures, "ReplayRole", not allowed(role, "sns:Publish", arn),
                  f"may publish to {arn} ({params})")
        role = Template(doc, params).statements("ReplayRole")
        for arn in [dlq_topic] + others + [alarm_topic]:
            check(failures, "ReplayRole", not allowed(role, "sns:Publish", arn),
                  f"may publish to {arn} without ReplayDlqTopicArn ({params})")
    for arn in (f"arn:aws:sqs:{REGION}:{ACCOUNT}:replay-dlq", dlq_topic + ".fifo"):
        try:
            Template(doc, {"ReplayDlqTopicArn": arn})
        except ValueError:
            continue
        failures.append(f"ReplayDlqTopicArn {arn} was accepted; it must be refused")


# What AWS grants only on "*": the actions have no resource type.
XRAY_PUT = {"xray:PutTraceSegments", "xray:PutTelemetryRecords"}
XRAY_STATES = XRAY_PUT | {"xray:GetSamplingRules", "xray:GetSamplingTargets"}
LOG_DELIVERY = {
    "logs:CreateLogDelivery", "logs:GetLogDelivery", "logs:UpdateLogDelivery",
    "logs:DeleteLogDelivery", "logs:ListLogDeliveries", "logs:PutResourcePolicy",
    "logs:DescribeResourcePolicies", "logs:DescribeLogGroups",
}
FUNCTION_ROLES = ["ArchiverRole", "ScraperRole", "ReplayRole"]
MACHINES = ["ScrapeStateMachine", "ReplayStateMachine"]
KMS_KEY = f"arn:aws:kms:{REGION}:{ACCOUNT}:key/1234abcd-12ab-34cd-56ef-1234567890ab"
TOPIC = f"arn:aws:sns:{REGION}:{ACCOUNT}:ops"


def star_allowed(resource: str) -> set[str]:
    return XRAY_PUT if resource in FUNCTION_ROLES else XRAY_STATES | LOG_DELIVERY


def check_star_resources(doc: dict, failures: list[str]) -> None:
    for params in ({}, {"Tracing": "true"},
                   {"Tracing": "true", "KmsKeyArn": KMS_KEY, "DynamoArchive": "ALL"}):
        template = Template(doc, params)
        for resource in FUNCTION_ROLES + MACHINES:
            for statement in template.statements(resource):
                if statement["Effect"] != "Allow" or "*" not in as_list(statement["Resource"]):
                    continue
                extra = set(as_list(statement["Action"])) - star_allowed(resource)
                check(failures, f"{resource} {params}", not extra,
                      f"statement {statement.get('Sid')} allows {sorted(extra)} on *")


def check_tracing(doc: dict, failures: list[str]) -> None:
    for base in ({}, {"KmsKeyArn": KMS_KEY, "DynamoArchive": "ALL,LATEST", "UseStreamTags": "true"}):
        off, on = Template(doc, base), Template(doc, {**base, "Tracing": "true"})
        for resource in FUNCTION_ROLES + MACHINES:
            before = [json.dumps(x, sort_keys=True) for x in off.statements(resource)]
            after = [json.dumps(x, sort_keys=True) for x in on.statements(resource)]
            check(failures, resource, all(x in after for x in before),
                  "tracing changes a statement it should only add to")
            added = [json.loads(x) for x in after if x not in before]
            actions = {a for x in added for a in as_list(x["Action"])}
            wanted = XRAY_PUT if resource in FUNCTION_ROLES else XRAY_STATES
            check(failures, resource, actions == wanted,
                  f"tracing adds {sorted(actions)}, not exactly {sorted(wanted)}")
            for action in XRAY_PUT:
                check(failures, resource, not allowed(off.statements(resource), action, "*"),
                      f"may {action} with tracing off")
                check(failures, resource, allowed(on.statements(resource), action, "*"),
                      f"may not {action} with tracing on")
        for function in ("ArchiverFunction", "ScraperFunction", "ReplayFunction"):
            check(failures, function, on.properties(function).get("Tracing") == "Active",
                  "not traced with Tracing=true")
            check(failures, function, off.properties(function).get("Tracing") in (None, "PassThrough"),
                  "traced with Tracing=false")
        for machine in MACHINES:
            check(failures, machine, on.properties(machine)["Tracing"] == {"Enabled": True}
                  and off.properties(machine)["Tracing"] == {"Enabled": False},
                  "tracing does not follow the Tracing parameter")


def check_notifications(doc: dict, failures: list[str]) -> None:
    for params in ({}, {"KmsKeyArn": KMS_KEY}, {"AlarmEmail": "ops@example.com"},
                   {"AlarmTopicArn": TOPIC}):
        template = Template(doc, params)
        label = f"notifications {params}"
        creates = "AlarmTopicArn" not in params
        topic = template.ref("AlarmTopic") if creates else TOPIC
        alarms = template.of_type("AWS::CloudWatch::Alarm")
        check(failures, label, len(alarms) == 4, f"{len(alarms)} alarms, not 4")
        metrics = {template.properties(a).get("MetricName") for a in alarms}
        check(failures, label, metrics == {"IteratorAge", "Errors", "ApproximateNumberOfMessagesVisible"},
              f"alarms on {sorted(map(str, metrics))}")
        queues = {template.properties(a)["Dimensions"][0]["Value"] for a in alarms
                  if template.properties(a)["Namespace"] == "AWS/SQS"}
        check(failures, label, queues == {"stack-ArchiverFailureQueue", "stack-ReplayDlq"},
              f"queue alarms on {sorted(queues)}")
        for alarm in alarms:
            props = template.properties(alarm)
            check(failures, label, props["AlarmActions"] == [topic] and props["OKActions"] == [topic],
                  f"{alarm} does not notify {topic}")
        rules = template.of_type("AWS::Events::Rule")
        check(failures, label, rules == ["FailedExecutionsRule"], f"rules {rules}")
        rule = template.properties("FailedExecutionsRule")
        pattern = rule["EventPattern"]
        check(failures, label, set(pattern["detail"]["status"]) == {"FAILED", "TIMED_OUT", "ABORTED"}
              and set(pattern["detail"]["stateMachineArn"]) == {template.ref(m) for m in MACHINES}
              and pattern["source"] == ["aws.states"],
              "the rule does not match failed, timed-out and aborted executions of both machines")
        check(failures, label, [t["Arn"] for t in rule["Targets"]] == [topic],
              "the rule does not notify the topic")
        body = json.loads(template.properties("Dashboard")["DashboardBody"])
        text = json.dumps(body)
        for needle in ("stack-ArchiverFunction", "stack-ScrapeStateMachine", "stack-ReplayStateMachine",
                       "stack-ArchiverFailureQueue", "stack-ReplayDlq", '"orders"', "IteratorAge",
                       "RecordsArchived", "BytesArchived", "ObjectsWritten", "ItemsWritten",
                       "NewestRecordAgeMs", "Throttles", "Duration", "ExecutionsStarted",
                       "ExecutionsFailed"):
            check(failures, label, needle in text, f"the dashboard does not show {needle}")
        own = ["AlarmTopic", "AlarmTopicPolicy"]
        for resource in own:
            check(failures, label, template.exists(resource) == creates,
                  f"{resource} {'missing' if creates else 'created with AlarmTopicArn'}")
        check(failures, label, template.exists("AlarmEmailSubscription") == ("AlarmEmail" in params),
              "email subscription does not follow AlarmEmail")
        check(failures, label, template.exists("AlarmTopicKey") == (creates and "KmsKeyArn" not in params),
              "the topic's own key exists when it shouldn't, or is missing")
        if not creates:
            continue
        key = template.properties("AlarmTopic")["KmsMasterKeyId"]
        check(failures, label, key == params.get("KmsKeyArn", template.ref("AlarmTopicKey")),
              f"the topic is encrypted with {key}")
        check_topic_policy(template, alarms, label, failures)
        if template.exists("AlarmTopicKey"):
            check_topic_key(template, label, failures)


def check_topic_policy(template: Template, alarms: list[str], label: str, failures: list[str]) -> None:
    topic = template.ref("AlarmTopic")
    statements = template.properties("AlarmTopicPolicy")["PolicyDocument"]["Statement"]
    sources = {
        "cloudwatch.amazonaws.com": {template.attribute(a, "Arn") for a in alarms},
        "events.amazonaws.com": {template.attribute("FailedExecutionsRule", "Arn")},
    }
    seen = set()
    for statement in statements:
        if statement["Effect"] == "Deny":
            continue
        principal = statement["Principal"]
        services = set(as_list(principal.get("Service", []))) if isinstance(principal, dict) else set()
        ok = (
            len(services) == 1
            and set(principal) == {"Service"}
            and services <= set(sources)
            and as_list(statement["Action"]) == ["sns:Publish"]
            and as_list(statement["Resource"]) == [topic]
        )
        check(failures, label, ok, f"topic policy statement {statement.get('Sid')} allows more than one service's publishing")
        if not ok:
            continue
        service = services.pop()
        seen.add(service)
        arns = set(as_list(statement.get("Condition", {}).get("ArnEquals", {}).get("aws:SourceArn", [])))
        check(failures, label, arns == sources[service],
              f"{service} may publish from {sorted(arns)}, not exactly {sorted(sources[service])}")
    check(failures, label, seen == set(sources), f"only {sorted(seen)} may publish")
    tls = [
        s for s in statements
        if s["Effect"] == "Deny" and s["Principal"] == "*" and "sns:Publish" in as_list(s["Action"])
        and s.get("Condition", {}).get("Bool", {}).get("aws:SecureTransport") == "false"
    ]
    check(failures, label, bool(tls), "the topic accepts publishing without TLS")


def check_topic_key(template: Template, label: str, failures: list[str]) -> None:
    statements = template.properties("AlarmTopicKey")["KeyPolicy"]["Statement"]
    root = f"arn:aws:iam::{ACCOUNT}:root"
    for statement in statements:
        principal = statement["Principal"]
        if principal == {"AWS": root}:
            continue  # administration through IAM, as every key has
        services = set(as_list(principal.get("Service", [])))
        ok = (
            set(principal) == {"Service"}
            and services <= {"cloudwatch.amazonaws.com", "events.amazonaws.com"}
            and set(as_list(statement["Action"])) <= {"kms:GenerateDataKey", "kms:Decrypt"}
        )
        check(failures, label, ok and statement["Effect"] == "Allow",
              f"key policy statement {statement.get('Sid')} serves more than alarms and the rule")
        if "cloudwatch.amazonaws.com" in services:
            account = statement.get("Condition", {}).get("StringEquals", {}).get("aws:SourceAccount")
            check(failures, label, account == ACCOUNT, "CloudWatch may use the key for any account's alarms")


def expiring_prefixes(template: Template) -> dict[str, str]:
    rules = template.properties("Bucket")["LifecycleConfiguration"]["Rules"]
    return {r["Id"]: r.get("Prefix", "") for r in rules if "ExpirationInDays" in r}


def check_lifecycle(template: Template, archive: str, scrape: str, replay: str,
                    label: str, failures: list[str]) -> None:
    """With ScrapeExpiryDays and DlqExpiryDays set: no expiry reaches an
    archive object or the other folder's objects, and an expiry is dropped
    only when another folder is nested in its folder."""
    expiring = expiring_prefixes(template)
    keys = {
        "archive": archive_keys(archive),
        "scrape": [f"{scrape}/run-1/shardId-000000000001/0-1-2.jsonl.gz", f"{scrape}/run-1/manifest.json"],
        "replay": [f"{replay}/aws/lambda/run-1/shardId-000000000001/2026/12/01/09/x",
                   f"{replay}/replays/run-1/shardId-000000000001/_checkpoint.json"],
    }
    owners = {"ExpireScrapeOutput": ("scrape", scrape), "ExpireReplayDlqAndProgress": ("replay", replay)}
    for rule, prefix in expiring.items():
        own, _ = owners[rule]
        for kind, kind_keys in keys.items():
            if kind == own:
                continue
            for key in kind_keys:
                check(failures, label, not key.startswith(prefix),
                      f"lifecycle rule {rule} ({prefix}) expires {kind} object {key}")
    for rule, (own, folder) in owners.items():
        nested = any(other.startswith(folder + "/") for other in (archive, scrape, replay))
        check(failures, label, (rule in expiring) == (not nested),
              f"lifecycle rule {rule} {'missing' if not nested else 'kept with a folder inside'}")


def check_settings(doc: dict, failures: list[str]) -> None:
    archiver = Template(doc, {}).properties("ArchiverFunction")
    check(failures, "ArchiverReservedConcurrency=0", "ReservedConcurrentExecutions" not in archiver,
          "0 reserves 0 (Lambda then throttles every invocation)")
    reserved = Template(doc, {"ArchiverReservedConcurrency": 8}).properties("ArchiverFunction")
    check(failures, "ArchiverReservedConcurrency=8", str(reserved.get("ReservedConcurrentExecutions")) == "8",
          "not reserved")
    for resource in ("Bucket", "BucketPolicy"):
        spec = doc["Resources"][resource]
        check(failures, resource, spec.get("DeletionPolicy") == "Retain"
              and spec.get("UpdateReplacePolicy") == "Retain", "not retained")
    table = Template(doc, {"DynamoArchive": "ALL", "KmsKeyArn": KMS_KEY}).properties("ArchiveTable")
    check(failures, "ArchiveTable", table.get("DeletionProtectionEnabled") is True, "no deletion protection")
    check(failures, "ArchiveTable", table["SSESpecification"].get("KMSMasterKeyId") == KMS_KEY,
          "not encrypted with KmsKeyArn")
    versions = Template(doc, {"Versioning": "Enabled"})
    check(failures, "Versioning=Enabled", "ExpireNoncurrentVersions" in
          [r["Id"] for r in versions.properties("Bucket")["LifecycleConfiguration"]["Rules"]],
          "noncurrent versions never expire")
    for machine, path in (("ScrapeStateMachine", "scrape"), ("ReplayStateMachine", "replay")):
        template = Template(doc, {"ExecutionTimeoutSeconds": 3600})
        raw = (ROOT / "statemachines" / f"{path}.asl.json").read_text()
        json.loads(raw)  # the tests read the file as it is
        text = raw
        for name, value in template.properties(machine)["DefinitionSubstitutions"].items():
            text = text.replace("${" + name + "}", str(value))
        definition = json.loads(text)
        check(failures, machine, definition.get("TimeoutSeconds") == 3600
              and definition.get("Version") == "1.0"
              and definition["Comment"] == json.loads(raw)["Comment"].replace("${ExecutionTimeout}", ""),
              "the substituted definition has no TimeoutSeconds of ExecutionTimeoutSeconds")
        logging = template.properties(machine)["Logging"]
        check(failures, machine, logging["Level"] == "ERROR" and logging["IncludeExecutionData"] is False,
              "logs more than errors, or execution data, by default")


def main() -> int:
    doc = cfn_yaml.load(str(ROOT / "template.yaml"))
    failures: list[str] = []
    checked = check_prefixes(doc, failures)
    if checked < 100:
        failures.append(f"only {checked} prefix combinations were accepted: the check proves nothing")
    check_refusals(doc, failures)
    check_invoke_grants(doc, failures)
    check_map_grants(doc, failures)
    check_dlq_topic(doc, failures)
    check_star_resources(doc, failures)
    check_tracing(doc, failures)
    check_notifications(doc, failures)
    check_settings(doc, failures)
    for failure in failures[:50]:
        print(f"FAIL {failure}")
    if failures:
        print(f"{len(failures)} IAM checks failed")
        return 1
    print(f"IAM: {checked} prefix combinations checked (grants, Map item reads and lifecycle"
          " expiry); refusals, invoke grants, Distributed Map grants, the DLQ topic's grant, '*' resources, tracing, the alarm topic's policy and key, alarms, rule,"
          " dashboard and settings as intended")
    return 0


if __name__ == "__main__":
    sys.exit(main())
