//! The controller across an API server restart: it keeps running, its watches
//! resume, and it does not spin while the server is away. Its own binary, run
//! after the others: restarting the API server disturbs every client.

mod common;

use std::time::Duration;

use common::controller::{
    condition, create, delete_all, identity, start_with, wait_for, without_workers,
};
use common::{TestNamespace, active_stream, stack, unique};
use logsub::api::LogSubscription;
use serde_json::json;

const SETTLE: Duration = Duration::from_secs(120);

#[tokio::test]
async fn the_controller_survives_an_api_server_restart() {
    let client = stack().kube().await;
    let ns = TestNamespace::new(&client).await;
    let aws = stack().aws().await;
    let logs = aws_sdk_cloudwatchlogs::Client::new(&aws);
    let (stream, _) = active_stream(&aws_sdk_kinesis::Client::new(&aws), "restart", 1).await;
    let group = format!("/{}", unique("restart"));
    logs.create_log_group()
        .log_group_name(&group)
        .send()
        .await
        .unwrap();
    let kubeconfig = identity(&ns).await;
    // A lease that outlasts the restart: leadership is kept, not lost and retaken.
    let mut controller = start_with(&ns, &kubeconfig, "10s", &["--lease-duration", "90s"]);
    let spec = |name: &str| {
        without_workers(
            name,
            json!({"names": [group]}),
            json!({"existing": {"name": stream}}),
        )
    };
    let filters_ready =
        |l: &LogSubscription| (condition(l, "SubscriptionFilterReady")?.0 == "True").then_some(());
    create(&ns, spec("before")).await;
    wait_for(&ns, "before", "reconciled", SETTLE, filters_ready).await;
    let reconciles = "logsub_controller_reconciles_total";
    let before = controller.metric(reconciles, &[]).await;

    common::stack_sh(&["restart-apiserver"]);

    assert!(
        controller.child.try_wait().expect("wait").is_none(),
        "the controller is still running"
    );
    // Its watches resumed: a LogSubscription created now is reconciled.
    create(&ns, spec("after")).await;
    wait_for(
        &ns,
        "after",
        "reconciled after the restart",
        SETTLE,
        filters_ready,
    )
    .await;
    let during = controller.metric(reconciles, &[]).await - before;
    // Two LogSubscriptions requeued every few seconds, and retries with backoff:
    // tens of reconciles, not thousands.
    assert!(during < 100.0, "{during} reconciles across the restart");
    delete_all(&ns).await;
    drop(controller);
    ns.delete().await;
}
