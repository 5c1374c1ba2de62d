"""The demo's event source: a log group and JSON log events put into CloudWatch
Logs, against the stack's moto. The controller subscribes the group.

  flow.py setup NAME          create (or reuse) the group /demo/NAME and its log streams
  flow.py produce NAME N RATE put N JSON log events, RATE a second
"""

import json
import os
import random
import sys
import time

import boto3

SESSION = boto3.session.Session(region_name=os.environ.get("AWS_REGION"))


def client(service):
    # Endpoints, credentials and region come from `hack/stack.sh env`.
    return SESSION.client(service)


def setup(name):
    logs = client("logs")
    group = f"/demo/{name}"
    for call in (
        lambda: logs.create_log_group(logGroupName=group),
        lambda: logs.create_log_stream(logGroupName=group, logStreamName="web-1"),
        lambda: logs.create_log_stream(logGroupName=group, logStreamName="web-2"),
    ):
        try:
            call()
        except logs.exceptions.ResourceAlreadyExistsException:
            pass
    print(group)


def produce(name, total, rate):
    logs = client("logs")
    group = f"/demo/{name}"
    paths = ["/api/orders", "/api/users", "/health", "/api/cart"]
    sent = 0
    while sent < total:
        started = time.time()
        batch = min(rate, total - sent)
        now = int(started * 1000)
        for stream in ("web-1", "web-2"):
            events = [
                {
                    "timestamp": now + i,
                    "message": json.dumps(
                        {
                            "level": random.choice(["info", "info", "info", "warn", "error"]),
                            "path": random.choice(paths),
                            "status": random.choice([200, 200, 200, 201, 404, 500]),
                            "latency_ms": random.randint(1, 900),
                            "stream": stream,
                        }
                    ),
                }
                for i in range(batch // 2 + (batch % 2 if stream == "web-1" else 0))
            ]
            if events:
                logs.put_log_events(logGroupName=group, logStreamName=stream, logEvents=events)
        sent += batch
        print(sent, flush=True)
        time.sleep(max(0.0, 1.0 - (time.time() - started)))


if __name__ == "__main__":
    if sys.argv[1] == "setup":
        setup(sys.argv[2])
    else:
        produce(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
