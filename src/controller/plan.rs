//! What to do (pure): about the stream, the workers' objects and the
//! subscription filters. For filters: from the log groups as
//! observed, the selection and the filter the spec wants, the writes that make
//! them match. Only our filter (named `logsub/<namespace>/<name>`, or as
//! earlier versions named it, sending to a stream this LogSubscription uses
//! or recorded) is ever written or deleted; other filters are left as they are.

use k8s_openapi::api::apps::v1::Deployment;

use super::resources::workload::CONFIG_HASH;
use crate::api::ManagedStream;
use crate::aws::kinesis::{Capacity, StreamInfo, StreamStatus};
use crate::aws::logs::{Filter, Group};

/// CloudWatch Logs allows this many subscription filters on a log group.
pub const FILTERS_PER_GROUP: usize = 2;

/// One thing to do (or not) about one log group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Our filter `name` is on `group` as wanted.
    Keep { group: String, name: String },
    /// Put the wanted filter on `group` under `name`: missing, changed
    /// behind our back, or the spec changed.
    Put { group: String, name: String },
    /// Remove our filter `name` from `group`: the group left the selection,
    /// or the filter was renamed.
    Delete { group: String, name: String },
    /// Put the wanted filter under its name, then remove ours of the
    /// earlier name `from`: both deliver meanwhile, so no event is missed.
    Rename { group: String, from: String },
    /// Selected, but two filters of other names hold the group's slots.
    Blocked(String),
    /// A filter of our name sends somewhere this LogSubscription never sent
    /// (the destination given): not ours, so left alone.
    Foreign(String, String),
}

impl Action {
    /// The log group it concerns.
    pub fn group(&self) -> &str {
        match self {
            Action::Keep { group, .. }
            | Action::Put { group, .. }
            | Action::Delete { group, .. }
            | Action::Rename { group, .. }
            | Action::Blocked(group)
            | Action::Foreign(group, _) => group,
        }
    }
}

/// The name earlier versions gave our filter, and the destinations toward
/// which a filter of that name is ours. Another LogSubscription may share
/// that name (`a/b-c` and `a-b/c`): then only a stream proven ours counts.
#[derive(Clone, Copy, Debug)]
pub struct Earlier<'a> {
    /// `logsub-<namespace>-<name>`.
    pub name: &'a str,
    /// Where a filter of that name that is ours sends.
    pub toward: &'a [&'a str],
}

/// The writes that make `groups` carry `want` exactly where `selected` says.
/// A filter of our name is ours only when it sends to `want`'s destination
/// or to one in `recorded` (the stream the status last named): the name
/// alone proves nothing. Ours under the `earlier` name is renamed to
/// `want`'s where the group has a free slot, and kept under it where not.
pub fn filters(
    groups: &[Group],
    selected: impl Fn(&str) -> bool,
    want: &Filter,
    earlier: Earlier<'_>,
    recorded: &[&str],
) -> Vec<Action> {
    let ours = |f: &Filter| {
        f.destination_arn == want.destination_arn || recorded.contains(&f.destination_arn.as_str())
    };
    let legacy = earlier.name;
    let ours_earlier = |f: &Filter| earlier.toward.contains(&f.destination_arn.as_str());
    let mut actions = Vec::new();
    for group in groups {
        let find = |name: &str| group.filters.iter().find(|f| f.name == name);
        let named = find(&want.name);
        let old = find(legacy).filter(|f| legacy != want.name && ours_earlier(f));
        let g = || group.name.clone();
        if !selected(&group.name) {
            for filter in [named.filter(|f| ours(f)), old].into_iter().flatten() {
                actions.push(Action::Delete {
                    group: g(),
                    name: filter.name.clone(),
                });
            }
            continue;
        }
        // Under which name our filter stays on this group, and as what it is there.
        let (name, existing) = match (named, old) {
            (Some(filter), old) if ours(filter) => {
                if let Some(old) = old {
                    actions.push(Action::Delete {
                        group: g(),
                        name: old.name.clone(),
                    });
                }
                (&want.name, Some(filter))
            }
            (Some(_), Some(old)) => (&old.name, Some(old)),
            (Some(filter), None) => {
                actions.push(Action::Foreign(g(), filter.destination_arn.clone()));
                continue;
            }
            (None, Some(old)) if group.filters.len() < FILTERS_PER_GROUP => {
                actions.push(Action::Rename {
                    group: g(),
                    from: old.name.clone(),
                });
                continue;
            }
            (None, Some(old)) => (&old.name, Some(old)),
            (None, None) if group.filters.len() >= FILTERS_PER_GROUP => {
                actions.push(Action::Blocked(g()));
                continue;
            }
            (None, None) => (&want.name, None),
        };
        let as_wanted = existing.is_some_and(|f| {
            *f == Filter {
                name: name.clone(),
                ..want.clone()
            }
        });
        let (group, name) = (g(), name.clone());
        actions.push(if as_wanted {
            Action::Keep { group, name }
        } else {
            Action::Put { group, name }
        });
    }
    actions
}

/// What to do about a managed stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StreamAction {
    /// It does not exist: create it.
    Create(Capacity),
    /// It is being created, updated or deleted: look again shortly.
    Wait(StreamStatus),
    /// Its capacity differs from the spec's: change it (one step at a time).
    Resize(Capacity),
    /// Its retention differs from the spec's.
    Retain(i32),
    /// As wanted.
    Ready,
}

/// The capacity a managed stream spec asks for.
pub fn capacity(spec: &ManagedStream) -> Capacity {
    match spec.shard_count {
        Some(n) if spec.on_demand.is_none() => Capacity::Shards(n),
        _ => Capacity::OnDemand,
    }
}

/// The next step that makes `observed` match `spec`. Kinesis takes one change
/// at a time on an ACTIVE stream, so capacity comes before retention.
pub fn stream(spec: &ManagedStream, observed: Option<&StreamInfo>) -> StreamAction {
    let Some(info) = observed else {
        return StreamAction::Create(capacity(spec));
    };
    if info.status != StreamStatus::Active {
        return StreamAction::Wait(info.status);
    }
    let want = capacity(spec);
    let matches = match want {
        Capacity::OnDemand => info.on_demand,
        Capacity::Shards(n) => !info.on_demand && info.open_shards == n,
    };
    if !matches {
        StreamAction::Resize(want)
    } else if info.retention_hours != spec.retention_hours {
        StreamAction::Retain(spec.retention_hours)
    } else {
        StreamAction::Ready
    }
}

/// What to do with the workers' objects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WorkloadStep {
    /// The Deployment runs what is wanted: nothing to write.
    Keep,
    /// Apply them all (missing, changed, or `force`d: every few resyncs).
    Apply,
}

/// Whether the workers' objects are applied, from the `current` Deployment
/// and the one `wanted`: their configuration (its hash on the pod template),
/// their image (an upgraded controller rolls the workers to its own) and
/// their replicas.
pub fn workload(current: Option<&Deployment>, wanted: &Deployment, force: bool) -> WorkloadStep {
    let template_hash = |d: &Deployment| {
        d.spec
            .template
            .metadata
            .as_ref()
            .and_then(|m| m.annotations.as_ref())
            .and_then(|a| a.get(CONFIG_HASH).cloned())
    };
    let images = |d: &Deployment| {
        d.spec.template.spec.as_ref().map(|p| {
            p.containers
                .iter()
                .map(|c| c.image.clone())
                .collect::<Vec<_>>()
        })
    };
    let replicas = |d: &Deployment| d.spec.replicas;
    match current {
        Some(d)
            if !force
                && template_hash(d) == template_hash(wanted)
                && images(d) == images(wanted)
                && replicas(d) == replicas(wanted) =>
        {
            WorkloadStep::Keep
        }
        _ => WorkloadStep::Apply,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{Distribution, OnDemand};

    /// Observed × desired → action for a managed stream.
    #[test]
    fn each_stream_state_gets_its_step() {
        let info = |status, shards, on_demand, hours| StreamInfo {
            name: "logsub-ns-app".into(),
            arn: "arn:aws:kinesis:us-east-1:1:stream/logsub-ns-app".into(),
            status,
            open_shards: shards,
            on_demand,
            retention_hours: hours,
            created_millis: Some(1_795_635_868_711),
        };
        let two = ManagedStream {
            shard_count: Some(2),
            on_demand: None,
            retention_hours: 24,
        };
        let on_demand = ManagedStream {
            shard_count: None,
            on_demand: Some(OnDemand {}),
            retention_hours: 48,
        };
        use StreamStatus::*;
        let cases = [
            (&two, None, StreamAction::Create(Capacity::Shards(2))),
            (&on_demand, None, StreamAction::Create(Capacity::OnDemand)),
            (
                &two,
                Some(info(Creating, 0, false, 24)),
                StreamAction::Wait(Creating),
            ),
            (
                &two,
                Some(info(Updating, 1, false, 24)),
                StreamAction::Wait(Updating),
            ),
            (&two, Some(info(Active, 2, false, 24)), StreamAction::Ready),
            (
                &two,
                Some(info(Active, 1, false, 24)),
                StreamAction::Resize(Capacity::Shards(2)),
            ),
            (
                &two,
                Some(info(Active, 4, true, 24)),
                StreamAction::Resize(Capacity::Shards(2)),
            ),
            (
                &on_demand,
                Some(info(Active, 4, false, 48)),
                StreamAction::Resize(Capacity::OnDemand),
            ),
            (
                &on_demand,
                Some(info(Active, 4, true, 24)),
                StreamAction::Retain(48),
            ),
            (
                &on_demand,
                Some(info(Active, 9, true, 48)),
                StreamAction::Ready,
            ),
        ];
        for (spec, observed, want) in cases {
            assert_eq!(
                stream(spec, observed.as_ref()),
                want,
                "{spec:?} {observed:?}"
            );
        }
    }

    fn filter(name: &str, pattern: &str) -> Filter {
        Filter {
            name: name.into(),
            pattern: pattern.into(),
            destination_arn: "arn:aws:kinesis:us-east-1:1:stream/s".into(),
            role_arn: Some("arn:aws:iam::1:role/r".into()),
            distribution: Some(Distribution::ByLogStream),
        }
    }

    fn group(name: &str, filters: &[Filter]) -> Group {
        Group {
            name: name.into(),
            filters: filters.to_vec(),
        }
    }

    /// Observed × desired → action, one row each.
    #[test]
    fn each_group_gets_what_it_needs() {
        let want = filter("logsub/ns/app", "ERROR");
        let ours_stale = filter("logsub/ns/app", "WARN");
        let mut before = filter("logsub/ns/app", "ERROR");
        before.destination_arn = "arn:aws:kinesis:us-east-1:1:stream/before".into();
        let mut elsewhere = filter("logsub/ns/app", "ERROR");
        elsewhere.destination_arn = "arn:aws:kinesis:us-east-1:1:stream/other".into();
        let legacy = filter("logsub-ns-app", "ERROR");
        let legacy_stale = filter("logsub-ns-app", "WARN");
        // `ns-app`/… of another LogSubscription: its legacy name is ours too.
        let mut legacy_theirs = filter("logsub-ns-app", "ERROR");
        legacy_theirs.destination_arn = "arn:aws:kinesis:us-east-1:1:stream/other".into();
        let foreign = |n: &str| filter(n, "");
        let groups = [
            group("/app/fresh", &[]),
            group("/app/current", std::slice::from_ref(&want)),
            group("/app/stale", &[ours_stale]),
            group("/app/moved", std::slice::from_ref(&before)),
            group("/app/redirected", std::slice::from_ref(&elsewhere)),
            group("/app/one-foreign", &[foreign("audit")]),
            group("/app/full", &[foreign("audit"), foreign("siem")]),
            group("/app/full-with-ours", &[foreign("audit"), want.clone()]),
            group("/app/legacy", std::slice::from_ref(&legacy)),
            group("/app/legacy-full", &[foreign("audit"), legacy_stale]),
            group("/app/legacy-and-new", &[legacy.clone(), want.clone()]),
            group("/app/legacy-theirs", std::slice::from_ref(&legacy_theirs)),
            group(
                "/app/legacy-redirected",
                &[elsewhere.clone(), legacy.clone()],
            ),
            group("/other/left", &[want.clone(), foreign("audit")]),
            group("/other/left-before", std::slice::from_ref(&before)),
            group("/other/left-legacy", &[legacy.clone(), want.clone()]),
            group("/other/theirs", std::slice::from_ref(&elsewhere)),
            group("/other/legacy-theirs", std::slice::from_ref(&legacy_theirs)),
            group("/other/never", &[foreign("audit")]),
        ];
        let recorded = ["arn:aws:kinesis:us-east-1:1:stream/before"];
        let toward = [want.destination_arn.as_str(), recorded[0]];
        let earlier = Earlier {
            name: "logsub-ns-app",
            toward: &toward,
        };
        let actions = filters(
            &groups,
            |g| g.starts_with("/app/"),
            &want,
            earlier,
            &recorded,
        );
        let at = |group: &str, name: &str| (group.to_owned(), name.to_owned());
        let keep = |g, n| {
            let (group, name) = at(g, n);
            Action::Keep { group, name }
        };
        let put = |g, n| {
            let (group, name) = at(g, n);
            Action::Put { group, name }
        };
        let delete = |g, n| {
            let (group, name) = at(g, n);
            Action::Delete { group, name }
        };
        assert_eq!(
            actions,
            [
                put("/app/fresh", "logsub/ns/app"),
                keep("/app/current", "logsub/ns/app"),
                put("/app/stale", "logsub/ns/app"),
                put("/app/moved", "logsub/ns/app"),
                Action::Foreign(
                    "/app/redirected".into(),
                    "arn:aws:kinesis:us-east-1:1:stream/other".into()
                ),
                put("/app/one-foreign", "logsub/ns/app"),
                Action::Blocked("/app/full".into()),
                keep("/app/full-with-ours", "logsub/ns/app"),
                Action::Rename {
                    group: "/app/legacy".into(),
                    from: "logsub-ns-app".into()
                },
                put("/app/legacy-full", "logsub-ns-app"),
                delete("/app/legacy-and-new", "logsub-ns-app"),
                keep("/app/legacy-and-new", "logsub/ns/app"),
                put("/app/legacy-theirs", "logsub/ns/app"),
                keep("/app/legacy-redirected", "logsub-ns-app"),
                delete("/other/left", "logsub/ns/app"),
                delete("/other/left-before", "logsub/ns/app"),
                delete("/other/left-legacy", "logsub/ns/app"),
                delete("/other/left-legacy", "logsub-ns-app"),
            ]
        );
    }

    /// A filter of the earlier name that another LogSubscription may own
    /// (no destination proven ours) is neither renamed, kept nor removed.
    #[test]
    fn an_earlier_name_another_may_own_is_left_alone() {
        let want = filter("logsub/ns/app", "ERROR");
        let legacy = filter("logsub-ns-app", "ERROR");
        let groups = [
            group("/app/shared", std::slice::from_ref(&legacy)),
            group("/app/shared-full", &[legacy.clone(), filter("audit", "")]),
            group("/other/shared", std::slice::from_ref(&legacy)),
        ];
        let earlier = Earlier {
            name: "logsub-ns-app",
            toward: &[],
        };
        let actions = filters(&groups, |g| g.starts_with("/app/"), &want, earlier, &[]);
        assert_eq!(
            actions,
            [
                Action::Put {
                    group: "/app/shared".into(),
                    name: "logsub/ns/app".into()
                },
                Action::Blocked("/app/shared-full".into()),
            ]
        );
    }

    fn deployment(hash: &str, image: &str, replicas: i32) -> Deployment {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "app-worker"},
            "spec": {
                "replicas": replicas,
                "selector": {},
                "template": {
                    "metadata": {"annotations": {CONFIG_HASH: hash}},
                    "spec": {"containers": [{"name": "worker", "image": image}]},
                },
            },
        }))
        .expect("a Deployment")
    }

    #[test]
    fn the_workers_are_applied_when_missing_changed_or_forced() {
        let wanted = deployment("h1", "logsub:2", 2);
        assert_eq!(workload(None, &wanted, false), WorkloadStep::Apply);
        assert_eq!(
            workload(Some(&wanted.clone()), &wanted, false),
            WorkloadStep::Keep
        );
        assert_eq!(
            workload(Some(&wanted.clone()), &wanted, true),
            WorkloadStep::Apply,
            "now and then, whatever it looks like"
        );
        for (current, what) in [
            (deployment("h0", "logsub:2", 2), "configuration"),
            (
                deployment("h1", "logsub:1", 2),
                "image (an upgraded controller)",
            ),
            (deployment("h1", "logsub:2", 1), "replicas"),
        ] {
            assert_eq!(
                workload(Some(&current), &wanted, false),
                WorkloadStep::Apply,
                "{what}"
            );
        }
    }
}
