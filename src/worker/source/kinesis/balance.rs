//! Lease arithmetic (pure): which shard leases a worker should take or steal this
//! round, as the Kinesis Client Library's lease taker decides.
//!
//! Each worker aims at a fair share, `ceil(active leases / live workers)`. It first
//! takes leases nobody holds (unowned or expired); when there are none and it is
//! still short, it steals from the most loaded worker, a bounded number per round,
//! so ownership converges without churn. A shard whose parents are not finished is
//! not yet eligible: parents are read before children.

use std::collections::{BTreeMap, BTreeSet, HashMap};

/// One shard lease as a worker sees it this round.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseView {
    /// The shard.
    pub shard_id: String,
    /// The shard's parents (from ListShards).
    pub parents: Vec<String>,
    /// The holder, if any.
    pub owner: Option<String>,
    /// Whether the holder let it lapse (no renewal within the lease duration).
    pub expired: bool,
    /// Whether the shard was read to its end (checkpoint `SHARD_END`).
    pub finished: bool,
}

/// What to do this round.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Unowned or expired leases to take.
    pub take: Vec<String>,
    /// Leases to steal, with their current holder.
    pub steal: Vec<(String, String)>,
}

/// Whether each lease may be read now: every parent is finished or has no lease
/// (trimmed past retention, or never seen).
pub fn eligible(leases: &[LeaseView]) -> HashMap<&str, bool> {
    let by_id: HashMap<&str, &LeaseView> =
        leases.iter().map(|l| (l.shard_id.as_str(), l)).collect();
    leases
        .iter()
        .map(|l| {
            let ready = l
                .parents
                .iter()
                .all(|p| by_id.get(p.as_str()).is_none_or(|parent| parent.finished));
            (l.shard_id.as_str(), ready)
        })
        .collect()
}

/// The plan for worker `me`, stealing at most `max_steal` leases per round.
pub fn plan(me: &str, leases: &[LeaseView], max_steal: usize) -> Plan {
    let ready = eligible(leases);
    let active: Vec<&LeaseView> = leases
        .iter()
        .filter(|l| !l.finished && ready[l.shard_id.as_str()])
        .collect();
    let mut held: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    held.insert(me, Vec::new());
    for lease in &active {
        if let (Some(owner), false) = (&lease.owner, lease.expired) {
            held.entry(owner.as_str())
                .or_default()
                .push(&lease.shard_id);
        }
    }
    let target = active.len().div_ceil(held.len());
    let mine = held[me].len();
    if mine >= target {
        return Plan::default();
    }
    let needed = target - mine;

    // Start at a place that differs between workers, so they do not all race
    // for the same free lease.
    let free: Vec<&str> = active
        .iter()
        .filter(|l| l.owner.is_none() || l.expired)
        .map(|l| l.shard_id.as_str())
        .collect();
    let take: Vec<String> = rotate(&free, me)
        .into_iter()
        .take(needed)
        .map(str::to_owned)
        .collect();
    if !take.is_empty() {
        return Plan {
            take,
            steal: Vec::new(),
        };
    }

    // Nothing free: steal from the most loaded, while it stays above our count.
    let mut steal = Vec::new();
    let mut counts: BTreeMap<&str, Vec<&str>> = held.clone();
    let mut mine = mine;
    while steal.len() < max_steal.min(needed) {
        let Some((victim, shards)) = counts
            .iter()
            .filter(|(w, _)| **w != me)
            .max_by(|a, b| a.1.len().cmp(&b.1.len()).then_with(|| b.0.cmp(a.0)))
        else {
            break;
        };
        // Stealing only helps when it leaves the victim no poorer than us.
        if shards.len() <= mine + 1 && shards.len() <= target {
            break;
        }
        let victim = *victim;
        let shard = *shards.iter().max().expect("a loaded worker holds leases");
        steal.push((shard.to_owned(), victim.to_owned()));
        counts
            .get_mut(victim)
            .expect("victim")
            .retain(|s| *s != shard);
        mine += 1;
    }
    Plan {
        take: Vec::new(),
        steal,
    }
}

/// Frees, in `leases`, those held under `me` that this process does not run:
/// a container restarted in place keeps its Pod name, so the new process finds
/// its predecessor's leases under its own identity, and a shard task that
/// failed leaves its lease held. Such a lease is taken again at once, not
/// after it expires (which, seen from its own holder, it never does), unless
/// `waiting` says the shard is backing off after a failure.
pub fn free_own_orphans(
    me: &str,
    leases: &mut [LeaseView],
    running: impl Fn(&str) -> bool,
    waiting: impl Fn(&str) -> bool,
) {
    for lease in leases {
        let shard = lease.shard_id.as_str();
        if lease.owner.as_deref() == Some(me) && !running(shard) && !waiting(shard) {
            lease.owner = None;
        }
    }
}

/// `items` rotated to start at a position derived from `me`.
fn rotate<'a>(items: &[&'a str], me: &str) -> Vec<&'a str> {
    if items.is_empty() {
        return Vec::new();
    }
    // FNV-1a: stable across processes and releases, unlike the std hasher.
    let hash = me.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    let start = (hash % items.len() as u64) as usize;
    items[start..]
        .iter()
        .chain(&items[..start])
        .copied()
        .collect()
}

/// The leases each worker holds (non-expired, active), for metrics and tests.
pub fn load(leases: &[LeaseView]) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for lease in leases.iter().filter(|l| !l.finished && !l.expired) {
        if let Some(owner) = &lease.owner {
            out.entry(owner.clone())
                .or_default()
                .insert(lease.shard_id.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn lease(shard: &str, owner: Option<&str>) -> LeaseView {
        LeaseView {
            shard_id: shard.into(),
            parents: Vec::new(),
            owner: owner.map(str::to_owned),
            expired: false,
            finished: false,
        }
    }

    #[test]
    fn a_lone_worker_takes_everything_free() {
        let leases: Vec<_> = (0..4).map(|i| lease(&format!("s{i}"), None)).collect();
        let plan = plan("w1", &leases, 1);
        assert_eq!(plan.take.len(), 4);
        assert!(plan.steal.is_empty());
    }

    #[test]
    fn a_new_worker_takes_its_fair_share_of_free_leases_only() {
        let mut leases: Vec<_> = (0..3)
            .map(|i| lease(&format!("s{i}"), Some("w1")))
            .collect();
        leases.extend((3..6).map(|i| lease(&format!("s{i}"), None)));
        // 6 active, 2 workers: target 3; w2 holds none, three are free.
        let plan = plan("w2", &leases, 1);
        assert_eq!(plan.take.len(), 3);
    }

    #[test]
    fn expired_leases_are_free() {
        let mut leases = vec![lease("s0", Some("w1")), lease("s1", Some("dead"))];
        leases[1].expired = true;
        assert_eq!(plan("w1", &leases, 1).take, ["s1"]);
    }

    /// A worker restarted in place (same Pod name, so the same identity) takes
    /// back, at once, the leases its predecessor held; one whose shard is
    /// backing off after a failure waits.
    #[test]
    fn a_restarted_worker_takes_back_its_own_leases() {
        let mut leases: Vec<_> = (0..4)
            .map(|i| lease(&format!("s{i}"), Some("pod-a")))
            .collect();
        // Unfreed, it counts them as held and takes nothing, forever.
        assert_eq!(plan("pod-a", &leases, 1), Plan::default());
        free_own_orphans("pod-a", &mut leases, |s| s == "s0", |s| s == "s2");
        let mut took = plan("pod-a", &leases, 1).take;
        took.sort();
        assert_eq!(took, ["s1", "s3"], "s0 runs, s2 backs off");
        let mut other = vec![lease("s0", Some("pod-b"))];
        free_own_orphans("pod-a", &mut other, |_| false, |_| false);
        assert_eq!(other[0].owner.as_deref(), Some("pod-b"), "only its own");
    }

    #[test]
    fn stealing_is_bounded_and_from_the_most_loaded() {
        let mut leases: Vec<_> = (0..6)
            .map(|i| lease(&format!("a{i}"), Some("w1")))
            .collect();
        leases.extend((0..2).map(|i| lease(&format!("b{i}"), Some("w2"))));
        // 8 active, 3 workers (w1, w2, w3): target 3.
        let p = plan("w3", &leases, 1);
        assert!(p.take.is_empty());
        assert_eq!(p.steal, [("a5".to_owned(), "w1".to_owned())]);
        let p = plan("w3", &leases, 5);
        assert_eq!(
            p.steal.len(),
            3,
            "up to the shortfall, while w1 stays richer: {p:?}"
        );
        assert!(p.steal.iter().all(|(_, from)| from == "w1"));
    }

    #[test]
    fn a_balanced_worker_does_nothing() {
        let leases = vec![
            lease("s0", Some("w1")),
            lease("s1", Some("w2")),
            lease("s2", Some("w1")),
        ];
        assert_eq!(
            plan("w2", &leases, 1),
            Plan::default(),
            "2 vs 1 with target 2: no churn"
        );
    }

    #[test]
    fn children_wait_for_their_parents() {
        let mut parent = lease("p", Some("w1"));
        let mut child = lease("c", None);
        child.parents = vec!["p".into()];
        let orphan = LeaseView {
            parents: vec!["gone".into()],
            ..lease("o", None)
        };
        let all = [parent.clone(), child.clone(), orphan.clone()];
        let ready = eligible(&all);
        assert!(!ready["c"] && ready["o"] && ready["p"]);
        assert_eq!(
            plan("w2", &[parent.clone(), child.clone(), orphan.clone()], 1).take,
            ["o"]
        );
        parent.finished = true;
        assert!(
            plan("w2", &[parent, child, orphan], 1)
                .take
                .contains(&"c".to_owned())
        );
    }

    proptest! {
        /// Workers that follow their plans round after round (the first writer of
        /// a lease wins, as the resourceVersion check makes it) end balanced:
        /// every shard owned, and no worker more than one lease above another.
        #[test]
        fn rounds_converge_to_a_balanced_assignment(shards in 1usize..40, workers in 1usize..8, initial in proptest::collection::vec(0usize..9, 0..40)) {
            let names: Vec<String> = (0..workers).map(|w| format!("worker-{w}")).collect();
            let mut leases: Vec<LeaseView> = (0..shards)
                .map(|s| {
                    let owner = initial.get(s).and_then(|w| names.get(*w)).cloned();
                    LeaseView { shard_id: format!("shardId-{s:012}"), parents: vec![], owner, expired: false, finished: false }
                })
                .collect();
            for _round in 0..(shards + 4) * 2 {
                for me in &names {
                    let plan = plan(me, &leases, 1);
                    for shard in plan.take.iter().chain(plan.steal.iter().map(|(s, _)| s)) {
                        let lease = leases.iter_mut().find(|l| &l.shard_id == shard).unwrap();
                        lease.owner = Some(me.clone());
                        lease.expired = false;
                    }
                }
            }
            prop_assert!(leases.iter().all(|l| l.owner.is_some()));
            let held = load(&leases);
            let counts: Vec<usize> = names.iter().map(|n| held.get(n).map_or(0, BTreeSet::len)).collect();
            let (min, max) = (counts.iter().min().unwrap(), counts.iter().max().unwrap());
            prop_assert!(max - min <= 1, "unbalanced: {:?}", counts);
        }
    }
}
