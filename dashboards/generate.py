#!/usr/bin/env python3
"""Writes the saved objects in dashboards/ from the definitions below.

    python3 dashboards/generate.py          # rewrite the .ndjson files
    python3 dashboards/generate.py --check  # fail if they are not current

The objects are aggregation-based visualizations in the 7.10 saved-object
format, the one OpenSearch Dashboards 2 (a fork of Kibana 7.10.2) stores and
Kibana 8 migrates on import. The two files differ in what each product expects
of a data view; the fields come from one place, the definitions here, which
use the field names logsub's worker writes (see docs and tests/dashboards.rs).

Fields named `x.keyword` are the keyword sub-fields dynamic mapping adds to
strings; the `@` fields are keywords in the index template the workers install
(`indexTemplate`), which the dashboards expect.
"""
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
INDEX_PATTERN_ID = "logsub-cwl"
# The examples write to cwl-YYYY.MM.DD indices (as the CloudWatch Logs
# Subscription Consumer did) and to logs-aws.* data streams.
INDEX_PATTERN = "cwl-*,logs-aws.*"


def agg(id_, type_, schema, **params):
    return {"id": str(id_), "enabled": True, "type": type_, "schema": schema, "params": params}


def count(id_=1):
    return agg(id_, "count", "metric")


def metric(id_, type_, field, **params):
    return agg(id_, type_, "metric", field=field, **params)


def over_time(id_=2):
    return agg(id_, "date_histogram", "segment", field="@timestamp", interval="auto",
               min_doc_count=1, extended_bounds={})


def terms(id_, field, schema="bucket", size=10, order_by="1"):
    return agg(id_, "terms", schema, field=field, size=size, order="desc", orderBy=order_by,
               otherBucket=False, missingBucket=False)


def xy_params(kind, metrics):
    """The chart settings a 7.10 line or bar chart saves (vislib)."""
    mode = "stacked" if kind == "histogram" else "normal"
    return {
        "type": kind,
        "grid": {"categoryLines": False},
        "categoryAxes": [{"id": "CategoryAxis-1", "type": "category", "position": "bottom",
                          "show": True, "scale": {"type": "linear"}, "labels": {"show": True,
                          "filter": True, "truncate": 100}, "title": {}}],
        "valueAxes": [{"id": "ValueAxis-1", "name": "LeftAxis-1", "type": "value", "position": "left",
                       "show": True, "scale": {"type": "linear", "mode": "normal"},
                       "labels": {"show": True, "rotate": 0, "filter": False, "truncate": 100},
                       "title": {"text": ""}}],
        "seriesParams": [{"show": True, "type": "line" if kind == "line" else "histogram",
                          "mode": mode, "data": {"label": label, "id": id_},
                          "valueAxis": "ValueAxis-1", "drawLinesBetweenPoints": True,
                          "lineWidth": 2, "showCircles": True} for id_, label in metrics],
        "addTooltip": True, "addLegend": True, "legendPosition": "right", "times": [],
        "addTimeMarker": False, "thresholdLine": {"show": False, "value": 10, "width": 1,
                                                 "style": "full", "color": "#E7664C"},
    }


TABLE = {"perPage": 10, "showPartialRows": False, "showMetricsAtAllLevels": False,
         "showTotal": False, "totalFunc": "sum", "percentageCol": ""}
PIE = {"type": "pie", "addTooltip": True, "addLegend": True, "legendPosition": "right",
       "isDonut": True, "labels": {"show": False, "values": True, "last_level": True, "truncate": 100}}


def vis(id_, title, kind, aggs, query="", params=None, labels=None):
    """One visualization; `labels` names the metrics of a chart for its series."""
    if params is None:
        metrics = [(a["id"], (labels or {}).get(a["id"], a["type"])) for a in aggs if a["schema"] == "metric"]
        params = xy_params(kind, metrics)
    return {"id": id_, "title": title, "type": kind, "aggs": aggs, "query": query, "params": params}


VPC = ("logsub-vpc-flow-logs", "logsub: VPC Flow Logs",
       "Flow records parsed by the vpcFlowLog transform.", "action:*", [
    vis("logsub-vpc-bytes-over-time", "VPC Flow Logs: bytes over time", "line",
        [metric(1, "sum", "bytes"), over_time(), terms(3, "action.keyword", "group", size=5)],
        query="action:*", labels={"1": "Bytes"}),
    vis("logsub-vpc-top-talkers", "VPC Flow Logs: top talkers", "table",
        [metric(1, "sum", "bytes"), metric(2, "sum", "packets"), count(3),
         terms(4, "srcaddr.keyword"), terms(5, "dstaddr.keyword", size=5)],
        query="action:*", params=TABLE),
    vis("logsub-vpc-rejected-over-time", "VPC Flow Logs: rejected flows", "histogram",
        [count(), over_time(), terms(3, "dstport", "group", size=5)],
        query="action:REJECT", labels={"1": "Rejected flows"}),
    vis("logsub-vpc-rejected-sources", "VPC Flow Logs: rejected by source and port", "table",
        [count(), terms(2, "srcaddr.keyword"), terms(3, "dstport", size=5),
         terms(4, "interface_id.keyword", size=3)],
        query="action:REJECT", params=TABLE),
    vis("logsub-vpc-actions", "VPC Flow Logs: accepted and rejected", "pie",
        [count(), terms(2, "action.keyword", "segment", size=5)], query="action:*", params=PIE),
])

LAMBDA = ("logsub-lambda", "logsub: Lambda",
          "Platform lines (START, END, REPORT) and log levels parsed by the lambda transform.",
          "lambda.request_id:*", [
    vis("logsub-lambda-invocations", "Lambda: invocations", "histogram",
        [count(), over_time(), terms(3, "@log_group", "group", size=10)],
        query="lambda.type:REPORT", labels={"1": "Invocations"}),
    vis("logsub-lambda-durations", "Lambda: durations (ms)", "line",
        [metric(1, "avg", "lambda.duration_ms"), over_time(),
         metric(3, "max", "lambda.duration_ms"), metric(4, "avg", "lambda.billed_duration_ms")],
        query="lambda.type:REPORT",
        labels={"1": "Average duration", "3": "Max duration", "4": "Average billed duration"}),
    vis("logsub-lambda-errors", "Lambda: errors", "histogram",
        [count(), over_time(), terms(3, "@log_group", "group", size=10)],
        query="level:ERROR", labels={"1": "Error lines"}),
    vis("logsub-lambda-cold-starts", "Lambda: cold starts and init duration", "line",
        [count(), over_time(), metric(3, "avg", "lambda.init_duration_ms")],
        query="lambda.cold_start:true",
        labels={"1": "Cold starts", "3": "Average init duration (ms)"}),
    vis("logsub-lambda-functions", "Lambda: functions", "table",
        [count(), terms(2, "@log_group", size=20),
         metric(3, "avg", "lambda.duration_ms"), metric(4, "max", "lambda.max_memory_used_mb"),
         metric(5, "max", "lambda.memory_size_mb")],
        query="lambda.type:REPORT", params=TABLE),
])

CLOUDTRAIL = ("logsub-cloudtrail", "logsub: CloudTrail",
              "CloudTrail events parsed by the cloudTrail transform.", "eventSource:*", [
    vis("logsub-cloudtrail-by-service", "CloudTrail: events by service", "histogram",
        [count(), over_time(), terms(3, "eventSource.keyword", "group", size=10)],
        query="eventSource:*", labels={"1": "Events"}),
    vis("logsub-cloudtrail-event-names", "CloudTrail: events by service and name", "table",
        [count(), terms(2, "eventSource.keyword"), terms(3, "eventName.keyword", size=10)],
        query="eventSource:*", params=TABLE),
    vis("logsub-cloudtrail-errors", "CloudTrail: errors", "table",
        [count(), terms(2, "errorCode.keyword"), terms(3, "eventName.keyword", size=10),
         terms(4, "userIdentity.arn.keyword", size=5)],
        query="errorCode:*", params=TABLE),
    vis("logsub-cloudtrail-principals", "CloudTrail: by principal", "table",
        [count(), terms(2, "userIdentity.arn.keyword", size=20),
         terms(3, "userIdentity.type.keyword", size=5)],
        query="eventSource:*", params=TABLE),
    vis("logsub-cloudtrail-source-ips", "CloudTrail: by source IP", "table",
        [count(), terms(2, "sourceIPAddress.keyword", size=20), terms(3, "eventSource.keyword", size=5)],
        query="eventSource:*", params=TABLE),
])

DASHBOARDS = [VPC, LAMBDA, CLOUDTRAIL]


def search_source(query, with_index):
    source = {"query": {"query": query, "language": "kuery"}, "filter": []}
    if with_index:
        source["indexRefName"] = "kibanaSavedObjectMeta.searchSourceJSON.index"
    return json.dumps(source)


def index_pattern(product):
    attributes = {"title": INDEX_PATTERN, "timeFieldName": "@timestamp"}
    if product == "kibana":
        # Kibana 8 data views carry a display name beside the pattern.
        attributes["name"] = "logsub (CloudWatch Logs)"
    return {"id": INDEX_PATTERN_ID, "type": "index-pattern", "attributes": attributes,
            "references": [], "migrationVersion": {"index-pattern": "7.6.0"}}


def visualization(v):
    state = {"title": v["title"], "type": v["type"], "aggs": v["aggs"], "params": v["params"]}
    return {
        "id": v["id"], "type": "visualization",
        "attributes": {
            "title": v["title"], "description": "", "version": 1, "uiStateJSON": "{}",
            "visState": json.dumps(state),
            "kibanaSavedObjectMeta": {"searchSourceJSON": search_source(v["query"], True)},
        },
        "references": [{"name": "kibanaSavedObjectMeta.searchSourceJSON.index",
                        "type": "index-pattern", "id": INDEX_PATTERN_ID}],
        "migrationVersion": {"visualization": "7.10.0"},
    }


def dashboard(id_, title, description, query, visualizations):
    panels = []
    for i, v in enumerate(visualizations):
        # Two panels a row; tables and pies get the same height as charts.
        grid = {"x": 24 * (i % 2), "y": 15 * (i // 2), "w": 24, "h": 15, "i": str(i + 1)}
        panels.append({"version": "7.10.0", "gridData": grid, "panelIndex": str(i + 1),
                       "embeddableConfig": {}, "panelRefName": f"panel_{i}"})
    return {
        "id": id_, "type": "dashboard",
        "attributes": {
            "title": title, "description": description, "hits": 0, "version": 1,
            "timeRestore": False, "panelsJSON": json.dumps(panels),
            "optionsJSON": json.dumps({"hidePanelTitles": False, "useMargins": True}),
            "kibanaSavedObjectMeta": {"searchSourceJSON": search_source(query, False)},
        },
        "references": [{"name": f"panel_{i}", "type": "visualization", "id": v["id"]}
                       for i, v in enumerate(visualizations)],
        "migrationVersion": {"dashboard": "7.9.3"},
    }


def objects(product):
    out = [index_pattern(product)]
    for id_, title, description, query, visualizations in DASHBOARDS:
        out.extend(visualization(v) for v in visualizations)
        out.append(dashboard(id_, title, description, query, visualizations))
    return "".join(json.dumps(o, sort_keys=True) + "\n" for o in out)


FILES = {"kibana-8.ndjson": "kibana", "opensearch-dashboards-2.ndjson": "opensearch-dashboards"}


def main():
    check = "--check" in sys.argv[1:]
    stale = []
    for name, product in FILES.items():
        path, text = HERE / name, objects(product)
        if check:
            if not path.exists() or path.read_text() != text:
                stale.append(name)
        else:
            path.write_text(text)
    if stale:
        sys.exit(f"dashboards/{', '.join(stale)} not current: run python3 dashboards/generate.py")


if __name__ == "__main__":
    main()
