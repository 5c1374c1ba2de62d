"""Starts moto's server with CloudWatch Logs and Kinesis corrected to behave as AWS does.

Each correction replaces one piece of moto's model or response code. Every patched
attribute is checked to exist first: a moto release that no longer has it makes the
launcher fail loudly instead of silently serving stock behaviour.

Corrections (each has its own test in test_corrections.py, which fails on stock moto):
  1. Logs -> Kinesis delivery: event ids are 56-digit strings; the filter pattern
     is honoured; a CONTROL_MESSAGE record is put when a filter is created.
  2. `distribution` is stored and honoured: ByLogStream keeps a log stream on one
     shard (partition key from the log stream), Random spreads deliveries.
  3. ListShards pages with NextToken/MaxResults and honours ShardFilter; a
     malformed shard iterator is InvalidArgumentException; iterators expire.
  4. A closed shard ends: read to its end, GetRecords returns no NextShardIterator
     and lists the ChildShards.
  5. After SplitShard/MergeShards/UpdateShardCount, writes (Logs deliveries too) go
     to the open children, and the parents keep their records (no copies).
  6. Re-putting an existing filter on a log group that has two filters updates it;
     only a third new filter gets LimitExceededException.
  7. Space-delimited patterns with named fields add `extractedFields` to each
     delivered event.
  8. CreateStream applies its Tags (stock moto drops them).
"""

import argparse
import base64
import io
import json
import os
import random
import sys
import time
from gzip import GzipFile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from filter_pattern import PatternError, compile_pattern  # noqa: E402

# Iterators expire after five minutes on AWS; tests may shorten it.
ITERATOR_TTL_SECONDS = float(os.environ.get("LOGSUB_MOTO_ITERATOR_TTL", "300"))
CONTROL_MESSAGE = "CWL CONTROL MESSAGE: Checking health of destination Kinesis stream."


def _require(owner, *names):
    for name in names:
        if not hasattr(owner, name):
            raise SystemExit(
                f"moto launcher: {owner.__module__}.{owner.__name__}.{name} is gone; "
                "this moto release needs the corrections reviewed (hack/moto/launcher.py)"
            )


def _gzip_b64(payload):
    out = io.BytesIO()
    with GzipFile(fileobj=out, mode="w") as f:
        f.write(json.dumps(payload, separators=(",", ":")).encode())
    return base64.b64encode(out.getvalue()).decode()


def patch():
    from moto.core.exceptions import JsonRESTError
    from moto.core.responses import ActionResult
    from moto.kinesis import models as kinesis_models
    from moto.kinesis import responses as kinesis_responses
    from moto.kinesis import utils as kinesis_utils
    from moto.kinesis.exceptions import InvalidArgumentError, ResourceNotFoundError
    from moto.logs import models as logs_models
    from moto.logs import responses as logs_responses
    from moto.logs.exceptions import InvalidParameterException, LimitExceededException

    LogEvent = logs_models.LogEvent
    LogStream = logs_models.LogStream
    LogGroup = logs_models.LogGroup
    LogsBackend = logs_models.LogsBackend
    SubscriptionFilter = logs_models.SubscriptionFilter
    LogsResponse = logs_responses.LogsResponse
    Shard = kinesis_models.Shard
    Stream = kinesis_models.Stream
    KinesisBackend = kinesis_models.KinesisBackend
    KinesisResponse = kinesis_responses.KinesisResponse

    _require(LogEvent, "__init__", "to_filter_dict")
    _require(LogStream, "put_log_events", "_send_log_events")
    _require(LogGroup, "put_subscription_filter")
    _require(LogsBackend, "put_subscription_filter")
    _require(SubscriptionFilter, "__init__", "update", "to_json")
    _require(LogsResponse, "put_subscription_filter", "logs_backend")
    _require(Shard, "__init__", "get_records", "put_record", "get_max_sequence_number", "to_json")
    _require(Stream, "split_shard", "merge_shards", "get_shard_for_key", "get_shard", "put_record")
    _require(KinesisBackend, "get_records", "get_shard_iterator", "describe_stream")
    _require(KinesisResponse, "list_shards", "get_records", "kinesis_backend")

    class ExpiredIteratorError(JsonRESTError):
        def __init__(self, message):
            super().__init__(error_type="ExpiredIteratorException", message=message)

    # --- 1. Event ids: 56 digits, the same for every filter the event goes to. ---
    original_event_init = LogEvent.__init__

    def event_init(self, ingestion_time, log_event):
        original_event_init(self, ingestion_time, log_event)
        self.aws_id = f"{max(int(self.timestamp), 0):020d}{self.event_id:036d}"

    def event_filter_dict(self):
        return {
            "eventId": self.aws_id,
            "ingestionTime": self.ingestion_time,
            "message": self.message,
            "timestamp": self.timestamp,
        }

    LogEvent.__init__ = event_init
    LogEvent.to_filter_dict = event_filter_dict

    # --- 1, 2, 7. Delivery: filter, extractedFields, partition key by distribution. ---
    def put_log_events(self, log_events):
        self.last_ingestion_time = logs_models.utcnow()
        self.stored_bytes += sum(len(e["message"]) for e in log_events)
        ingestion_time = int(logs_models.unix_time_millis(self.last_ingestion_time))
        events = [LogEvent(ingestion_time, e) for e in log_events]
        self.events += events
        self.upload_sequence_token += 1
        for sub in list(self.log_group.subscription_filters.values()):
            pattern = compile_pattern(sub.filter_pattern)
            delivered = []
            for event in events:
                extracted = pattern.match(event.message)
                if extracted is None:
                    continue
                item = {"id": event.aws_id, "timestamp": event.timestamp, "message": event.message}
                if extracted:
                    item["extractedFields"] = extracted
                delivered.append(item)
            if delivered:
                _deliver(self, sub, delivered)
        return f"{self.upload_sequence_token:056d}"

    def _deliver(stream, sub, events):
        service = sub.destination_arn.split(":")[2]
        if service != "kinesis":
            stream._send_log_events(
                service=service,
                destination_arn=sub.destination_arn,
                filter_name=sub.name,
                log_events=events,
            )
            return
        backend = kinesis_models.kinesis_backends[stream.account_id][stream.region]
        target = backend.describe_stream(stream_arn=sub.destination_arn, stream_name=None)
        payload = {
            "messageType": "DATA_MESSAGE",
            "owner": stream.account_id,
            "logGroup": stream.log_group.name,
            "logStream": stream.log_stream_name,
            "subscriptionFilters": [sub.name],
            "logEvents": events,
        }
        if getattr(sub, "distribution", "ByLogStream") == "Random":
            key = "%032x" % random.getrandbits(128)
        else:
            key = f"{stream.log_group.name}/{stream.log_stream_name}"[-256:]
        target.put_record(partition_key=key, explicit_hash_key="", data=_gzip_b64(payload))

    LogStream.put_log_events = put_log_events

    # --- 2. distribution stored and reported. ---
    original_filter_init = SubscriptionFilter.__init__

    def filter_init(self, *args, **kwargs):
        original_filter_init(self, *args, **kwargs)
        self.distribution = "ByLogStream"

    original_filter_to_json = SubscriptionFilter.to_json

    def filter_to_json(self):
        out = original_filter_to_json(self)
        out["distribution"] = self.distribution
        return out

    SubscriptionFilter.__init__ = filter_init
    SubscriptionFilter.to_json = filter_to_json

    # --- 6. The two-filter limit counts new filters only. ---
    def group_put_subscription_filter(self, filter_name, filter_pattern, destination_arn, role_arn):
        if filter_name in self.subscription_filters:
            self.subscription_filters[filter_name].update(filter_pattern, destination_arn, role_arn)
            return False
        if len(self.subscription_filters) >= 2:
            raise LimitExceededException()
        self.subscription_filters[filter_name] = SubscriptionFilter(
            name=filter_name,
            log_group_name=self.name,
            filter_pattern=filter_pattern,
            destination_arn=destination_arn,
            role_arn=role_arn,
        )
        return True

    LogGroup.put_subscription_filter = group_put_subscription_filter

    # --- 1, 2. Pattern checked, distribution kept, CONTROL_MESSAGE on creation. ---
    original_backend_put = LogsBackend.put_subscription_filter

    def backend_put_subscription_filter(self, log_group_name, filter_name, filter_pattern,
                                        destination_arn, role_arn, distribution="ByLogStream"):
        try:
            compile_pattern(filter_pattern)
        except PatternError as e:
            raise InvalidParameterException(f"Invalid filter pattern: {e}")
        if distribution not in ("ByLogStream", "Random"):
            raise InvalidParameterException(f"Invalid distribution: {distribution}")
        group = self.groups.get(log_group_name)
        existing = group.subscription_filters.get(filter_name) if group else None
        old_destination = existing.destination_arn if existing else None
        original_backend_put(self, log_group_name, filter_name, filter_pattern, destination_arn, role_arn)
        sub = self.groups[log_group_name].subscription_filters[filter_name]
        sub.distribution = distribution
        if destination_arn.split(":")[2] == "kinesis" and old_destination != destination_arn:
            backend = kinesis_models.kinesis_backends[self.account_id][self.region_name]
            target = backend.describe_stream(stream_arn=destination_arn, stream_name=None)
            control = {
                "messageType": "CONTROL_MESSAGE",
                "owner": "CloudwatchLogs",
                "logGroup": "",
                "logStream": "",
                "subscriptionFilters": [],
                "logEvents": [
                    {"id": "", "timestamp": int(time.time() * 1000), "message": CONTROL_MESSAGE}
                ],
            }
            target.put_record(partition_key="%032x" % random.getrandbits(128), explicit_hash_key="",
                              data=_gzip_b64(control))

    LogsBackend.put_subscription_filter = backend_put_subscription_filter

    def response_put_subscription_filter(self):
        self.logs_backend.put_subscription_filter(
            self._get_param("logGroupName"),
            self._get_param("filterName"),
            self._get_param("filterPattern") or "",
            self._get_param("destinationArn"),
            self._get_param("roleArn"),
            self._get_param("distribution") or "ByLogStream",
        )
        return ""

    LogsResponse.put_subscription_filter = response_put_subscription_filter

    # --- 3. Shard iterators: validated, expiring. 4. Closed shards end. ---
    def compose_shard_iterator(stream_name, shard, last_sequence_id):
        raw = f"{stream_name}:{shard.shard_id}:{last_sequence_id}:{time.time():.3f}"
        return base64.b64encode(raw.encode()).decode()

    def decompose_shard_iterator(iterator):
        try:
            stream_name, shard_id, last, issued = base64.b64decode(iterator, validate=True).decode().split(":")
            return stream_name, shard_id, int(last), float(issued)
        except Exception:
            raise InvalidArgumentError(f"Invalid ShardIterator: {iterator[:64]}")

    # moto.kinesis.utils.compose_new_shard_iterator calls compose_shard_iterator
    # through the module, so replacing it there covers GetShardIterator too.
    kinesis_utils.compose_shard_iterator = compose_shard_iterator
    kinesis_models.compose_shard_iterator = compose_shard_iterator

    def backend_get_records(self, stream_arn, shard_iterator, limit):
        stream_name, shard_id, last, issued = decompose_shard_iterator(shard_iterator)
        if time.time() - issued > ITERATOR_TTL_SECONDS:
            raise ExpiredIteratorError(
                f"Iterator expired. The iterator was created at time {time.ctime(issued)} "
                f"while right now it is {time.ctime()} which is further in the future than "
                f"the tolerated delay of {int(ITERATOR_TTL_SECONDS * 1000)} milliseconds."
            )
        stream = self.describe_stream(stream_arn=stream_arn, stream_name=stream_name)
        try:
            shard = stream.get_shard(shard_id)
        except Exception:
            raise ResourceNotFoundError(f"Shard {shard_id} in stream {stream.stream_name} does not exist")
        records, last, millis_behind = shard.get_records(str(last), limit)
        child_shards = None
        if not shard.is_open and last >= shard.get_max_sequence_number():
            children = [s for s in stream.shards.values() if shard.shard_id in (s.parent, s.adjacent_parent)]
            child_shards = [
                {
                    "ShardId": c.shard_id,
                    "ParentShards": [p for p in (c.parent, c.adjacent_parent) if p],
                    "HashKeyRange": {"StartingHashKey": str(c.starting_hash), "EndingHashKey": str(c.ending_hash)},
                }
                for c in children
            ]
            return None, records, millis_behind, child_shards
        return compose_shard_iterator(stream_name, shard, last), records, millis_behind, child_shards

    KinesisBackend.get_records = backend_get_records

    def response_get_records(self):
        next_iterator, records, millis_behind, child_shards = self.kinesis_backend.get_records(
            self._get_param("StreamARN"), self._get_param("ShardIterator"), self._get_param("Limit")
        )
        out = {"Records": [r.to_json() for r in records], "MillisBehindLatest": millis_behind}
        if next_iterator is not None:
            out["NextShardIterator"] = next_iterator
        if child_shards is not None:
            out["ChildShards"] = child_shards
        return ActionResult(out)

    KinesisResponse.get_records = response_get_records

    # --- 3. ListShards: paging by NextToken alone, and ShardFilter. ---
    original_shard_init = Shard.__init__

    def shard_init(self, *args, **kwargs):
        original_shard_init(self, *args, **kwargs)
        self.created_at = time.time()
        self.closed_at = None

    Shard.__init__ = shard_init

    def shard_sort_key(s):
        return s._shard_id

    def response_list_shards(self):
        token = self._get_param("NextToken")
        max_results = int(self._get_param("MaxResults") or 1000)
        if not 1 <= max_results <= 10000:
            raise InvalidArgumentError("MaxResults must be between 1 and 10000")
        if token:
            if self._get_param("StreamName") or self._get_param("StreamARN"):
                raise InvalidArgumentError("NextToken and StreamName/StreamARN cannot be provided together.")
            try:
                state = json.loads(base64.b64decode(token, validate=True))
                stream_name, after, shard_filter = state["stream"], state["after"], state["filter"]
            except Exception:
                raise InvalidArgumentError("Invalid NextToken")
        else:
            stream_name = None
            after = None
            shard_filter = self._get_param("ShardFilter")
            if self._get_param("ExclusiveStartShardId"):
                after = self._get_param("ExclusiveStartShardId")
        stream = self.kinesis_backend.describe_stream(
            stream_arn=None if token else self._get_param("StreamARN"),
            stream_name=stream_name if token else self._get_param("StreamName"),
        )
        shards = sorted(stream.shards.values(), key=shard_sort_key)
        shards = _apply_shard_filter(shards, shard_filter)
        if after:
            shards = [s for s in shards if s.shard_id > after]
        page, rest = shards[:max_results], shards[max_results:]
        out = {"Shards": [s.to_json() for s in page]}
        if rest:
            out["NextToken"] = base64.b64encode(
                json.dumps({"stream": stream.stream_name, "after": page[-1].shard_id,
                            "filter": shard_filter}).encode()
            ).decode()
        return ActionResult(out)

    def _apply_shard_filter(shards, shard_filter):
        if not shard_filter:
            return shards
        kind = shard_filter.get("Type")
        if kind == "AFTER_SHARD_ID":
            return [s for s in shards if s.shard_id > shard_filter.get("ShardId", "")]
        if kind == "AT_LATEST":
            return [s for s in shards if s.is_open]
        if kind in ("AT_TRIM_HORIZON", "FROM_TRIM_HORIZON"):
            return shards  # nothing is trimmed within a test's lifetime
        if kind in ("AT_TIMESTAMP", "FROM_TIMESTAMP"):
            ts = float(shard_filter.get("Timestamp", 0))
            if kind == "AT_TIMESTAMP":
                return [s for s in shards if s.created_at <= ts and (s.closed_at is None or s.closed_at > ts)]
            return [s for s in shards if s.closed_at is None or s.closed_at > ts]
        raise InvalidArgumentError(f"Invalid ShardFilter type: {kind}")

    KinesisResponse.list_shards = response_list_shards

    # --- 5. Resharding: writes go to open shards; parents keep their records. ---
    def get_shard_for_key(self, partition_key, explicit_hash_key):
        if not isinstance(partition_key, str) or len(partition_key) > 256:
            raise InvalidArgumentError("partition_key")
        if explicit_hash_key:
            key = int(explicit_hash_key)
            if key >= 2**128:
                raise InvalidArgumentError("explicit_hash_key")
        else:
            key = int(kinesis_models.md5_hash(partition_key.encode("utf-8")).hexdigest(), 16)
        for shard in self.shards.values():
            if shard.is_open and shard.starting_hash <= key <= shard.ending_hash:
                return shard
        return None

    Stream.get_shard_for_key = get_shard_for_key

    def split_shard(self, shard_to_split, new_starting_hash_key):
        new_start = int(new_starting_hash_key)
        shard = self.shards[shard_to_split]
        if not shard.starting_hash < new_start < shard.ending_hash:
            raise InvalidArgumentError(
                f"NewStartingHashKey {new_start} used in SplitShard() on shard {shard_to_split} is not "
                f"within the shard's hash key range."
            )
        if not shard.is_open:
            raise InvalidArgumentError(
                f"Shard {shard.shard_id} has already been merged or split, and thus is not eligible "
                "for merging or splitting."
            )
        last_id = max(s._shard_id for s in self.shards.values())
        for shard_index, (start, end) in enumerate(
            [(shard.starting_hash, new_start - 1), (new_start, shard.ending_hash)], start=1
        ):
            child = Shard(last_id + shard_index, starting_hash=start, ending_hash=end, parent=shard.shard_id)
            self.shards[child.shard_id] = child
        shard.is_open = False
        shard.closed_at = time.time()

    def merge_shards(self, shard_to_merge, adjacent_shard_to_merge):
        first = self.shards[shard_to_merge]
        second = self.shards[adjacent_shard_to_merge]
        if first.ending_hash + 1 == second.starting_hash:
            low, high = first, second
        elif second.ending_hash + 1 == first.starting_hash:
            low, high = second, first
        else:
            raise InvalidArgumentError(f"Shards {shard_to_merge} and {adjacent_shard_to_merge} are not adjacent")
        if not (first.is_open and second.is_open):
            raise InvalidArgumentError("Only open shards can be merged")
        last_id = max(s._shard_id for s in self.shards.values())
        child = Shard(last_id + 1, starting_hash=low.starting_hash, ending_hash=high.ending_hash,
                      parent=first.shard_id, adjacent_parent=second.shard_id)
        self.shards[child.shard_id] = child
        now = time.time()
        for parent in (first, second):
            parent.is_open = False
            parent.closed_at = now

    Stream.split_shard = split_shard
    Stream.merge_shards = merge_shards

    # --- 8. CreateStream applies its Tags. ---
    _require(KinesisResponse, "create_stream")
    _require(KinesisBackend, "add_tags_to_stream")
    original_create_stream = KinesisResponse.create_stream

    def response_create_stream(self):
        result = original_create_stream(self)
        tags = self._get_param("Tags")
        if tags:
            self.kinesis_backend.add_tags_to_stream(None, self._get_param("StreamName"), tags)
        return result

    KinesisResponse.create_stream = response_create_stream


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5000)
    parser.add_argument("--stock", action="store_true", help="serve stock moto, without corrections")
    args = parser.parse_args()
    if not args.stock:
        patch()
    from moto.server import main as moto_main

    moto_main(["-H", args.host, "-p", str(args.port)])


if __name__ == "__main__":
    main()
