"""Each moto correction, tested on the wire with boto3.

Every test runs twice: against the corrected server (must pass) and against stock
moto (must fail, `xfail(strict=True)`), which proves the correction is what makes
the difference. Both servers are started here, on free loopback ports.
"""

import base64
import gzip
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
import uuid

import boto3
import botocore.exceptions
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROLE = "arn:aws:iam::123456789012:role/CWLtoKinesis"


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(stock, ttl):
    port = _free_port()
    args = [sys.executable, os.path.join(HERE, "launcher.py"), "--port", str(port)]
    if stock:
        args.append("--stock")
    env = dict(os.environ, LOGSUB_MOTO_ITERATOR_TTL=str(ttl))
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"moto exited: {proc.stderr.read().decode()[-2000:]}")
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/moto-api/", timeout=1)
            return proc, f"http://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("moto did not start within 30 s")


@pytest.fixture(scope="session")
def servers():
    started = {}
    for name, stock in (("corrected", False), ("stock", True)):
        started[name] = _start(stock, ttl=2)
    yield {name: url for name, (_, url) in started.items()}
    for proc, _ in started.values():
        proc.terminate()
        proc.wait(10)


@pytest.fixture(params=["corrected", pytest.param("stock", marks=pytest.mark.xfail(strict=True))])
def aws(request, servers):
    url = servers[request.param]
    kw = dict(endpoint_url=url, region_name="us-east-1", aws_access_key_id="k", aws_secret_access_key="s")
    return boto3.client("logs", **kw), boto3.client("kinesis", **kw)


def _name(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def _stream(kinesis, shards=1):
    name = _name("s")
    kinesis.create_stream(StreamName=name, ShardCount=shards)
    arn = kinesis.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]["StreamARN"]
    return name, arn


def _group(logs, streams=("app-1",)):
    group = "/" + _name("g")
    logs.create_log_group(logGroupName=group)
    for s in streams:
        logs.create_log_stream(logGroupName=group, logStreamName=s)
    return group


def _put(logs, group, stream, messages, ts=1795635868711):
    logs.put_log_events(
        logGroupName=group,
        logStreamName=stream,
        logEvents=[{"timestamp": ts + i, "message": m} for i, m in enumerate(messages)],
    )


def _records(kinesis, name):
    """Every record of every shard, decoded, as (shard id, payload)."""
    out = []
    for shard in kinesis.list_shards(StreamName=name)["Shards"]:
        it = kinesis.get_shard_iterator(StreamName=name, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON")[
            "ShardIterator"
        ]
        for _ in range(20):
            resp = kinesis.get_records(ShardIterator=it)
            for r in resp["Records"]:
                out.append((shard["ShardId"], json.loads(gzip.decompress(r["Data"]))))
            it = resp.get("NextShardIterator")
            if not it or not resp["Records"]:
                break
    return out


def _data(kinesis, name):
    return [p for _, p in _records(kinesis, name) if p["messageType"] == "DATA_MESSAGE"]


# --- 1. delivery format ----------------------------------------------------------


def test_event_ids_are_56_digit_strings(aws):
    logs, kinesis = aws
    name, arn = _stream(kinesis)
    group = _group(logs)
    logs.put_subscription_filter(logGroupName=group, filterName="f", filterPattern="", destinationArn=arn, roleArn=ROLE)
    _put(logs, group, "app-1", ["ERROR disk full", "INFO ok"])
    [payload] = _data(kinesis, name)
    ids = [e["id"] for e in payload["logEvents"]]
    assert all(isinstance(i, str) and len(i) == 56 and i.isdigit() for i in ids), ids
    assert len(set(ids)) == 2
    assert payload["owner"] == "123456789012"
    assert payload["logGroup"] == group and payload["logStream"] == "app-1"
    assert payload["subscriptionFilters"] == ["f"]


@pytest.mark.parametrize(
    "pattern, messages, delivered",
    [
        ("ERROR", ["ERROR disk full", "INFO ok", "error lower"], ["ERROR disk full"]),
        ('"disk full"', ["ERROR disk full", "disk is full"], ["ERROR disk full"]),
        ("?ERROR ?WARN", ["ERROR a", "WARN b", "INFO c"], ["ERROR a", "WARN b"]),
        ("ERROR -Exiting", ["ERROR x", "ERROR Exiting"], ["ERROR x"]),
        ('{ $.level = "error" }', ['{"level":"error"}', '{"level":"info"}', "level error"], ['{"level":"error"}']),
        ("{ $.latency > 100 }", ['{"latency":150}', '{"latency":50}'], ['{"latency":150}']),
    ],
)
def test_filter_pattern_is_honoured(aws, pattern, messages, delivered):
    logs, kinesis = aws
    name, arn = _stream(kinesis)
    group = _group(logs)
    logs.put_subscription_filter(
        logGroupName=group, filterName="f", filterPattern=pattern, destinationArn=arn, roleArn=ROLE
    )
    _put(logs, group, "app-1", messages)
    got = [e["message"] for p in _data(kinesis, name) for e in p["logEvents"]]
    assert got == delivered


def test_invalid_filter_pattern_is_rejected(aws):
    logs, kinesis = aws
    _, arn = _stream(kinesis)
    group = _group(logs)
    with pytest.raises(botocore.exceptions.ClientError) as e:
        logs.put_subscription_filter(
            logGroupName=group, filterName="f", filterPattern="{ $.a = ", destinationArn=arn, roleArn=ROLE
        )
    assert e.value.response["Error"]["Code"] == "InvalidParameterException"


def test_control_message_when_a_filter_is_created(aws):
    logs, kinesis = aws
    name, arn = _stream(kinesis)
    group = _group(logs)
    logs.put_subscription_filter(logGroupName=group, filterName="f", filterPattern="", destinationArn=arn, roleArn=ROLE)
    payloads = [p for _, p in _records(kinesis, name)]
    assert len(payloads) == 1
    control = payloads[0]
    assert control["messageType"] == "CONTROL_MESSAGE"
    assert control["owner"] == "CloudwatchLogs"
    assert control["logGroup"] == "" and control["logStream"] == "" and control["subscriptionFilters"] == []
    [event] = control["logEvents"]
    assert event["id"] == ""
    assert event["message"] == "CWL CONTROL MESSAGE: Checking health of destination Kinesis stream."
    # An update of the same filter sends no second one.
    logs.put_subscription_filter(
        logGroupName=group, filterName="f", filterPattern="ERROR", destinationArn=arn, roleArn=ROLE
    )
    assert len(_records(kinesis, name)) == 1


# --- 2. distribution ---------------------------------------------------------------


def test_distribution_by_log_stream_keeps_a_stream_on_one_shard(aws):
    logs, kinesis = aws
    name, arn = _stream(kinesis, shards=4)
    group = _group(logs, streams=["a", "b"])
    logs.put_subscription_filter(
        logGroupName=group, filterName="f", filterPattern="", destinationArn=arn, roleArn=ROLE,
        distribution="ByLogStream",
    )
    for i in range(12):
        _put(logs, group, "a", [f"a{i}"])
    shards = {shard for shard, p in _records(kinesis, name) if p["messageType"] == "DATA_MESSAGE"}
    assert len(shards) == 1
    [f] = logs.describe_subscription_filters(logGroupName=group)["subscriptionFilters"]
    assert f["distribution"] == "ByLogStream"


def test_distribution_random_is_stored_and_spreads(aws):
    logs, kinesis = aws
    name, arn = _stream(kinesis, shards=4)
    group = _group(logs, streams=["a"])
    logs.put_subscription_filter(
        logGroupName=group, filterName="f", filterPattern="", destinationArn=arn, roleArn=ROLE, distribution="Random"
    )
    [f] = logs.describe_subscription_filters(logGroupName=group)["subscriptionFilters"]
    assert f["distribution"] == "Random"
    for i in range(24):
        _put(logs, group, "a", [f"a{i}"])
    shards = {shard for shard, p in _records(kinesis, name) if p["messageType"] == "DATA_MESSAGE"}
    assert len(shards) > 1


# --- 3. ListShards paging, iterators ---------------------------------------------------


def test_list_shards_pages_with_next_token(aws):
    _, kinesis = aws
    name, _ = _stream(kinesis, shards=5)
    resp = kinesis.list_shards(StreamName=name, MaxResults=2)
    seen = [s["ShardId"] for s in resp["Shards"]]
    while resp.get("NextToken"):
        resp = kinesis.list_shards(NextToken=resp["NextToken"], MaxResults=2)
        seen += [s["ShardId"] for s in resp["Shards"]]
    assert seen == [f"shardId-{i:012d}" for i in range(5)]


def test_list_shards_honours_shard_filter(aws):
    _, kinesis = aws
    name, _ = _stream(kinesis, shards=2)
    kinesis.split_shard(StreamName=name, ShardToSplit="shardId-000000000000", NewStartingHashKey=str(2**126))
    latest = kinesis.list_shards(StreamName=name, ShardFilter={"Type": "AT_LATEST"})["Shards"]
    assert sorted(s["ShardId"] for s in latest) == ["shardId-000000000001", "shardId-000000000002", "shardId-000000000003"]
    after = kinesis.list_shards(StreamName=name, ShardFilter={"Type": "AFTER_SHARD_ID", "ShardId": "shardId-000000000001"})
    assert [s["ShardId"] for s in after["Shards"]] == ["shardId-000000000002", "shardId-000000000003"]


def test_malformed_shard_iterator_is_invalid_argument(aws):
    _, kinesis = aws
    with pytest.raises(botocore.exceptions.ClientError) as e:
        kinesis.get_records(ShardIterator="not-an-iterator")
    assert e.value.response["Error"]["Code"] == "InvalidArgumentException"


def test_shard_iterators_expire(aws):
    _, kinesis = aws
    name, _ = _stream(kinesis)
    it = kinesis.get_shard_iterator(StreamName=name, ShardId="shardId-000000000000", ShardIteratorType="LATEST")[
        "ShardIterator"
    ]
    time.sleep(2.5)  # the servers here expire iterators after 2 s (AWS: 5 min)
    with pytest.raises(botocore.exceptions.ClientError) as e:
        kinesis.get_records(ShardIterator=it)
    assert e.value.response["Error"]["Code"] == "ExpiredIteratorException"


# --- 4, 5. Resharding -----------------------------------------------------------------------


def _read_shard(kinesis, name, shard_id):
    it = kinesis.get_shard_iterator(StreamName=name, ShardId=shard_id, ShardIteratorType="TRIM_HORIZON")[
        "ShardIterator"
    ]
    data = []
    for _ in range(10):
        resp = kinesis.get_records(ShardIterator=it)
        data += [r["Data"] for r in resp["Records"]]
        if "NextShardIterator" not in resp or resp["NextShardIterator"] is None:
            return data, resp.get("ChildShards")
        it = resp["NextShardIterator"]
    return data, None


def test_closed_shard_ends_with_child_shards(aws):
    _, kinesis = aws
    name, _ = _stream(kinesis)
    kinesis.put_record(StreamName=name, Data=b"before", PartitionKey="k")
    kinesis.split_shard(StreamName=name, ShardToSplit="shardId-000000000000", NewStartingHashKey=str(2**127))
    data, children = _read_shard(kinesis, name, "shardId-000000000000")
    assert data == [b"before"]
    assert children is not None
    assert sorted(c["ShardId"] for c in children) == ["shardId-000000000001", "shardId-000000000002"]
    assert all(c["ParentShards"] == ["shardId-000000000000"] for c in children)


def test_writes_after_split_go_to_children_and_parent_keeps_its_records(aws):
    logs, kinesis = aws
    name, arn = _stream(kinesis)
    group = _group(logs)
    logs.put_subscription_filter(logGroupName=group, filterName="f", filterPattern="", destinationArn=arn, roleArn=ROLE)
    _put(logs, group, "app-1", ["before split"])
    kinesis.split_shard(StreamName=name, ShardToSplit="shardId-000000000000", NewStartingHashKey=str(2**127))
    _put(logs, group, "app-1", ["after split"])
    for i in range(10):
        kinesis.put_record(StreamName=name, Data=f"r{i}".encode(), PartitionKey=f"k{i}")
    parent, _ = _read_shard(kinesis, name, "shardId-000000000000")
    assert len(parent) == 2  # control message + "before split", not rewritten
    children = []
    for shard in ("shardId-000000000001", "shardId-000000000002"):
        children += _read_shard(kinesis, name, shard)[0]
    assert len(children) == 11
    messages = [e["message"] for d in children if d[:2] == b"\x1f\x8b" for e in json.loads(gzip.decompress(d))["logEvents"]]
    assert messages == ["after split"]


def test_merge_does_not_copy_records(aws):
    _, kinesis = aws
    name, _ = _stream(kinesis, shards=2)
    for i in range(6):
        kinesis.put_record(StreamName=name, Data=f"r{i}".encode(), PartitionKey=f"k{i}")
    kinesis.merge_shards(StreamName=name, ShardToMerge="shardId-000000000000", AdjacentShardToMerge="shardId-000000000001")
    merged, _ = _read_shard(kinesis, name, "shardId-000000000002")
    assert merged == []
    kinesis.put_record(StreamName=name, Data=b"new", PartitionKey="k")
    merged, _ = _read_shard(kinesis, name, "shardId-000000000002")
    assert merged == [b"new"]


def test_update_shard_count_routes_writes_to_open_shards(aws):
    _, kinesis = aws
    name, _ = _stream(kinesis, shards=1)
    kinesis.update_shard_count(StreamName=name, TargetShardCount=2, ScalingType="UNIFORM_SCALING")
    for i in range(8):
        kinesis.put_record(StreamName=name, Data=f"r{i}".encode(), PartitionKey=f"k{i}")
    parent, _ = _read_shard(kinesis, name, "shardId-000000000000")
    assert parent == []


# --- 6. Two-filter limit ---------------------------------------------------------------------


def test_updating_a_filter_at_the_two_filter_limit(aws):
    logs, kinesis = aws
    _, arn = _stream(kinesis)
    group = _group(logs)
    for f in ("one", "two"):
        logs.put_subscription_filter(logGroupName=group, filterName=f, filterPattern="", destinationArn=arn, roleArn=ROLE)
    logs.put_subscription_filter(logGroupName=group, filterName="two", filterPattern="ERROR", destinationArn=arn, roleArn=ROLE)
    filters = {f["filterName"]: f for f in logs.describe_subscription_filters(logGroupName=group)["subscriptionFilters"]}
    assert filters["two"]["filterPattern"] == "ERROR"
    with pytest.raises(botocore.exceptions.ClientError) as e:
        logs.put_subscription_filter(logGroupName=group, filterName="three", filterPattern="", destinationArn=arn, roleArn=ROLE)
    assert e.value.response["Error"]["Code"] == "LimitExceededException"


# --- 7. extractedFields -------------------------------------------------------------------------


def test_space_delimited_pattern_adds_extracted_fields(aws):
    logs, kinesis = aws
    name, arn = _stream(kinesis)
    group = _group(logs)
    logs.put_subscription_filter(
        logGroupName=group, filterName="f", filterPattern="[ip, user, verb, status=5*, size]",
        destinationArn=arn, roleArn=ROLE,
    )
    _put(logs, group, "app-1", ["10.0.0.1 frank GET 503 1234", "10.0.0.2 anna GET 200 99", "too few fields"])
    [payload] = _data(kinesis, name)
    [event] = payload["logEvents"]
    assert event["message"] == "10.0.0.1 frank GET 503 1234"
    assert event["extractedFields"] == {"ip": "10.0.0.1", "user": "frank", "verb": "GET", "status": "503", "size": "1234"}


# --- 8. CreateStream tags ------------------------------------------------------------------------


def test_create_stream_applies_its_tags(aws):
    _, kinesis = aws
    name = _name("s")
    kinesis.create_stream(StreamName=name, ShardCount=1, Tags={"logsub.io/uid": "u-1"})
    tags = kinesis.list_tags_for_stream(StreamName=name)["Tags"]
    assert {t["Key"]: t["Value"] for t in tags} == {"logsub.io/uid": "u-1"}
