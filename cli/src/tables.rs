//! What `get` prints for people: aligned tables without borders, like
//! kubectl's, laid out by comfy-table so that a long name never pushes a
//! column out of line. `-o json` is the stable contract; this is not.

use std::time::Duration;

use comfy_table::presets::NOTHING;
use comfy_table::{CellAlignment, ContentArrangement, Table};
use shoal_api::ByteSize;
#[cfg(test)]
use shoal_api::resources::{AppStatus, HostState};
use shoal_api::resources::{AppSummary, HostInfo, PodInfo, PodState, SchedulerInfo};
use shoal_api::wire::{ReplicaState, now_ms};

/// A table of `rows` under `header`, columns two spaces apart, no trailing
/// blanks. Columns named in `right` are right-aligned (numbers).
pub(crate) fn render(header: &[&str], right: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut table = Table::new();
    table
        .load_preset(NOTHING)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header(header.iter().copied());
    for row in rows {
        table.add_row(row);
    }
    for (i, name) in header.iter().enumerate() {
        if let Some(column) = table.column_mut(i) {
            column.set_padding((0, 2));
            if right.contains(name) {
                column.set_cell_alignment(CellAlignment::Right);
            }
        }
    }
    table
        .lines()
        .map(|line| line.trim_end().to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

/// `get apps`.
pub fn apps(apps: &[AppSummary]) -> String {
    let rows = apps
        .iter()
        .map(|app| {
            let components: Vec<String> = app
                .components
                .iter()
                .map(|c| format!("{} {}/{}", c.name, c.running, c.desired))
                .collect();
            vec![
                app.namespace.to_string(),
                app.name.to_string(),
                app.revision.to_string(),
                app.status.to_string(),
                components.join(", "),
            ]
        })
        .collect();
    render(
        &["NAMESPACE", "NAME", "REVISION", "STATUS", "COMPONENTS"],
        &["REVISION"],
        rows,
    )
}

/// `get hosts`.
pub fn hosts(hosts: &[HostInfo]) -> String {
    let rows = hosts
        .iter()
        .map(|h| {
            let labels: Vec<String> = h.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            vec![
                h.id.to_string(),
                h.state.to_string(),
                h.replicas.to_string(),
                format!(
                    "{}/{}",
                    ByteSize::bytes(h.used_memory),
                    ByteSize::bytes(h.capacity.memory)
                ),
                h.http.clone().unwrap_or_else(|| "-".into()),
                labels.join(","),
            ]
        })
        .collect();
    render(
        &["HOST", "STATE", "REPLICAS", "MEMORY", "HTTP", "LABELS"],
        &["REPLICAS"],
        rows,
    )
}

/// `get schedulers`: the leader first.
pub fn schedulers(schedulers: &[SchedulerInfo]) -> String {
    let rows = schedulers
        .iter()
        .map(|s| {
            vec![
                s.id.clone(),
                if s.leader { "leader" } else { "standby" }.to_string(),
                s.epoch.map_or_else(|| "-".to_string(), |e| e.to_string()),
                s.api.clone(),
                age(shoal_api::wire::now_ms().saturating_sub(s.started_at_ms)),
            ]
        })
        .collect();
    render(
        &["SCHEDULER", "ROLE", "EPOCH", "API", "AGE"],
        &["EPOCH"],
        rows,
    )
}

/// `get pods`.
pub fn pods(pods: &[PodInfo]) -> String {
    let rows = pods
        .iter()
        .map(|p| {
            vec![
                p.id.to_string(),
                p.host.as_ref().map_or("-".to_string(), |h| h.to_string()),
                p.revision.to_string(),
                ready_text(p).to_string(),
                p.restarts.to_string(),
                state_text(&p.state),
            ]
        })
        .collect();
    render(
        &["POD", "HOST", "GEN", "READY", "RESTARTS", "STATE"],
        &["GEN", "RESTARTS"],
        rows,
    )
}

/// A pod's state in words, with the reason and the next retry.
pub fn state_text(state: &PodState) -> String {
    match state {
        PodState::Pending { reason } => format!("pending: {reason}"),
        PodState::Host(
            s @ (ReplicaState::Starting | ReplicaState::Running | ReplicaState::Completed),
        ) => s.label().into(),
        PodState::Host(
            s @ (ReplicaState::Restarting {
                reason,
                retry_in_ms,
            }
            | ReplicaState::CrashLoop {
                reason,
                retry_in_ms,
            }),
        ) => format!(
            "{} (again in {}): {reason}",
            s.label(),
            humantime::format_duration(Duration::from_millis(*retry_in_ms))
        ),
        PodState::Host(s @ (ReplicaState::Exited { reason } | ReplicaState::Failed { reason })) => {
            format!("{}: {reason}", s.label())
        }
    }
}

/// "yes", "no", or "-" for a replica not running.
pub fn ready_text(p: &PodInfo) -> &'static str {
    match (&p.state, p.ready) {
        (PodState::Host(ReplicaState::Running), true) => "yes",
        (PodState::Host(ReplicaState::Running), false) => "no",
        _ => "-",
    }
}

/// How long ago something `ms` milliseconds old happened, in its largest
/// unit: "4s ago", "3m ago", "2h ago", "5d ago".
pub fn age(ms: u64) -> String {
    format!("{} ago", span(ms))
}

pub use shoal_api::quantity::span;

/// `get namespaces`.
pub fn namespaces(list: &[shoal_api::resources::NamespaceInfo]) -> String {
    let rows = list
        .iter()
        .map(|ns| {
            vec![
                ns.name.to_string(),
                ns.apps.to_string(),
                used_of(
                    ns.usage.replicas.to_string(),
                    ns.spec.quota.replicas.map(|n| n.to_string()),
                ),
                used_of(
                    ns.usage.memory.to_string(),
                    ns.spec.quota.memory.map(|m| m.to_string()),
                ),
                age(now_ms().saturating_sub(ns.created_ms)),
            ]
        })
        .collect();
    render(
        &["NAME", "APPS", "REPLICAS", "MEMORY", "AGE"],
        &["APPS"],
        rows,
    )
}

/// `used/limit`, or just `used` without a limit.
pub fn used_of(used: String, limit: Option<String>) -> String {
    match limit {
        Some(limit) => format!("{used}/{limit}"),
        None => used,
    }
}

/// `auth token list`.
pub fn tokens(list: &[shoal_api::resources::TokenInfo]) -> String {
    let now = now_ms();
    let rows = list
        .iter()
        .map(|t| {
            let roles: Vec<String> = t
                .principal
                .bindings
                .iter()
                .map(|b| match &b.namespace {
                    Some(ns) => format!("{}@{ns}", b.role),
                    None => format!("{}@*", b.role),
                })
                .collect();
            let expires = if t.expires_ms > now {
                format!("in {}", span(t.expires_ms - now))
            } else {
                age(now - t.expires_ms)
            };
            vec![
                t.id.to_string(),
                t.principal.name.to_string(),
                t.principal.kind.to_string(),
                roles.join(","),
                t.state.to_string(),
                expires,
                t.created_by.clone(),
            ]
        })
        .collect();
    render(
        &[
            "ID",
            "PRINCIPAL",
            "KIND",
            "ROLES",
            "STATE",
            "EXPIRES",
            "CREATED BY",
        ],
        &[],
        rows,
    )
}

/// `invoke --trace`: one line per host call, then how many went unlisted.
pub fn host_calls(record: &shoal_api::trace::HostCalls) -> String {
    if record.calls.is_empty() {
        return "no host calls".to_string();
    }
    let micros = |us: u64| match us {
        0..1_000 => format!("{us}µs"),
        1_000..1_000_000 => format!("{:.1}ms", us as f64 / 1e3),
        _ => format!("{:.2}s", us as f64 / 1e6),
    };
    let rows = record
        .calls
        .iter()
        .map(|c| {
            vec![
                format!("+{}", micros(c.at_us)),
                format!("{}.{}", c.capability, c.function),
                c.target.clone(),
                format!("{} B", c.sent_bytes),
                c.outcome.to_string(),
                micros(c.took_us),
            ]
        })
        .collect();
    let mut out = render(
        &["AT", "CALL", "TARGET", "SENT", "RESULT", "TOOK"],
        &["AT", "SENT", "TOOK"],
        rows,
    );
    if record.dropped > 0 {
        out.push_str(&format!(
            "\n… and {} more calls, not recorded",
            record.dropped
        ));
    }
    out
}

/// `debug dumps`.
pub fn dumps(list: &[shoal_api::dumps::DumpInfo]) -> String {
    let now = now_ms();
    let rows = list
        .iter()
        .map(|d| {
            vec![
                d.id.clone(),
                age(now.saturating_sub(d.at_ms)),
                d.replica.clone(),
                d.host.clone(),
                d.trap.clone(),
                d.function.clone(),
                ByteSize::bytes(d.bytes).to_string(),
            ]
        })
        .collect();
    render(
        &["ID", "WHEN", "REPLICA", "HOST", "TRAP", "FUNCTION", "SIZE"],
        &["SIZE"],
        rows,
    )
}

/// `audit`.
pub fn audit(list: &[shoal_api::resources::AuditRecord]) -> String {
    let now = now_ms();
    let rows = list
        .iter()
        .map(|r| {
            vec![
                age(now.saturating_sub(r.at_ms)),
                r.principal.clone(),
                r.verb.to_string(),
                r.resource.to_string(),
                r.namespace
                    .as_ref()
                    .map_or_else(|| "*".to_string(), ToString::to_string),
                r.name.clone().unwrap_or_default(),
                format!("{} {}", r.outcome, r.status),
            ]
        })
        .collect();
    render(
        &[
            "WHEN",
            "PRINCIPAL",
            "VERB",
            "RESOURCE",
            "NAMESPACE",
            "NAME",
            "OUTCOME",
        ],
        &[],
        rows,
    )
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use shoal_api::Name;
    use shoal_api::resources::ComponentSummary;
    use shoal_api::wire::{Capacity, HostId, ReplicaId};

    use super::*;

    fn n(s: &str) -> Name {
        Name::new(s).unwrap()
    }

    fn pod(
        ns: &str,
        app: &str,
        pod: &str,
        index: u32,
        host: Option<&str>,
        state: PodState,
    ) -> PodInfo {
        PodInfo {
            id: ReplicaId {
                namespace: n(ns),
                app: n(app),
                pod: n(pod),
                index,
            },
            components: vec![n(pod)],
            host: host.map(|h| HostId::new(h).unwrap()),
            revision: 3,
            ready: matches!(state, PodState::Host(ReplicaState::Running)),
            state,
            restarts: index,
            last_error: None,
        }
    }

    #[test]
    fn pods_line_up_whatever_the_length_of_their_names() {
        let table = pods(&[
            pod(
                "default",
                "echo",
                "echo",
                0,
                Some("local"),
                PodState::Host(ReplicaState::Running),
            ),
            pod(
                "a-rather-long-namespace",
                "an-even-longer-application-name",
                "web",
                12,
                Some("host-with-a-long-name-7f3a2c"),
                PodState::Host(ReplicaState::CrashLoop {
                    reason: "the job exited with 1".into(),
                    retry_in_ms: 4_000,
                }),
            ),
            pod(
                "x",
                "y",
                "z",
                1,
                None,
                PodState::Pending {
                    reason: "no host has 64MiB free with region=eu".into(),
                },
            ),
        ]);
        insta::assert_snapshot!(table);
    }

    #[test]
    fn apps_and_hosts_line_up() {
        let apps_table = apps(&[
            AppSummary {
                namespace: n("default"),
                name: n("hello"),
                revision: 1,
                components: vec![ComponentSummary {
                    name: n("web"),
                    pod: n("web"),
                    kind: shoal_api::ComponentKind::Http,
                    desired: 2,
                    running: 2,
                    last_scale: None,
                }],
                status: AppStatus::Running,
            },
            AppSummary {
                namespace: n("team-with-a-long-name"),
                name: n("orders-and-invoices"),
                revision: 1234,
                components: vec![
                    ComponentSummary {
                        name: n("api"),
                        pod: n("api"),
                        kind: shoal_api::ComponentKind::Http,
                        desired: 3,
                        running: 1,
                        last_scale: None,
                    },
                    ComponentSummary {
                        name: n("billing"),
                        pod: n("billing"),
                        kind: shoal_api::ComponentKind::Worker,
                        desired: 0,
                        running: 0,
                        last_scale: None,
                    },
                ],
                status: AppStatus::Degraded,
            },
        ]);
        insta::assert_snapshot!("apps", apps_table);
        let hosts_table = hosts(&[
            HostInfo {
                id: HostId::new("local").unwrap(),
                labels: BTreeMap::new(),
                capacity: Capacity {
                    memory: 24 << 30,
                    slots: 256,
                },
                used_memory: 4 << 30,
                replicas: 4,
                http: Some("127.0.0.1:8080".into()),
                state: HostState::Ready,
                last_seen_ms: 200,
            },
            HostInfo {
                id: HostId::new("eu-west-1a-worker-0042").unwrap(),
                labels: [
                    ("zone".to_string(), "a".to_string()),
                    ("region".to_string(), "eu".to_string()),
                ]
                .into_iter()
                .collect(),
                capacity: Capacity {
                    memory: 64 << 30,
                    slots: 1000,
                },
                used_memory: 0,
                replicas: 0,
                http: None,
                state: HostState::Lost,
                last_seen_ms: 9_000,
            },
        ]);
        insta::assert_snapshot!("hosts", hosts_table);
    }

    #[test]
    fn host_calls_read_in_order_with_their_sizes() {
        use shoal_api::trace::{CallOutcome, HostCall, HostCalls};
        let call = |function: &str, target: &str, outcome, at_us, took_us| HostCall {
            capability: "keyvalue".into(),
            function: function.into(),
            target: target.into(),
            sent_bytes: 5,
            outcome,
            at_us,
            took_us,
        };
        let record = HostCalls {
            calls: vec![
                call("set", "greeting", CallOutcome::Ok { bytes: 0 }, 120, 1_800),
                call(
                    "get",
                    "missing",
                    CallOutcome::Error {
                        error: "the store could not be reached".into(),
                    },
                    2_400,
                    1_250_000,
                ),
            ],
            dropped: 3,
        };
        insta::assert_snapshot!("host_calls", host_calls(&record));
        assert_eq!(host_calls(&HostCalls::default()), "no host calls");
    }

    #[test]
    fn ages_use_their_largest_unit() {
        assert_eq!(age(4_000), "4s ago");
        assert_eq!(age(200_000), "3m ago");
        assert_eq!(age(3 * 3_600_000 + 59_000), "3h ago");
        assert_eq!(age(3 * 86_400_000), "3d ago");
        assert_eq!(span(365 * 86_400_000), "365d");
    }
}
