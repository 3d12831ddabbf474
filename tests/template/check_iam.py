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
  aliases), not every function whose name starts the same.

Run by `bin/test template` with the tools venv (cfn-lint parses the YAML).
Exits 1 naming each failed check.
"""

from __future__ import annotations

import fnmatch
import itertools
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

    def statements(self, resource: str, policies_key: str = "Policies") -> list[dict]:
        props = self.doc["Resources"][resource]["Properties"]
        out = []
        for policy in self.value(props.get(policies_key, [])):
            document = policy.get("PolicyDocument", policy)
            statements = document["Statement"]
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
        params = {"ArchivePrefix": archive, "ScrapePrefix": scrape, "ReplayPrefix": replay}
        try:
            template = Template(doc, params)
        except ValueError:
            continue  # refused before any work, as CloudFormation would
        checked += 1
        label = f"ArchivePrefix={archive} ScrapePrefix={scrape} ReplayPrefix={replay}"
        scraper = template.statements("ScraperRole")
        replayer = template.statements("ReplayRole")
        archiver = template.statements("ArchiverRole")
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
    return checked


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
    for arn in (targets, f"{targets}:3", f"{targets}:prod"):
        check(failures, "ReplayRole", allowed(role, "lambda:InvokeFunction", arn),
              f"may not invoke {arn}")
    for arn in (f"{targets}-v2", f"{targets}x"):
        check(failures, "ReplayRole", not allowed(role, "lambda:InvokeFunction", arn),
              f"may invoke {arn}")


def main() -> int:
    doc = cfn_yaml.load(str(ROOT / "template.yaml"))
    failures: list[str] = []
    checked = check_prefixes(doc, failures)
    if checked < 100:
        failures.append(f"only {checked} prefix combinations were accepted: the check proves nothing")
    check_refusals(doc, failures)
    check_invoke_grants(doc, failures)
    for failure in failures[:50]:
        print(f"FAIL {failure}")
    if failures:
        print(f"{len(failures)} IAM checks failed")
        return 1
    print(f"IAM: {checked} prefix combinations checked; refusals and invoke grants as intended")
    return 0


if __name__ == "__main__":
    sys.exit(main())
