//! NATS identities and what each may publish and subscribe to.
//!
//! Every Shoal process connects to NATS with a credential of its own, and
//! nats-server enforces the permissions below: they are the trust boundary
//! that no Shoal code can forget to check. The scheduler runs the cluster;
//! host `h` speaks only as `h` and takes commands only on its own subject;
//! a namespace's client reaches only that namespace's subjects. Guests hold
//! no connection at all: their host publishes for them, under their
//! namespace's prefix.

use crate::Name;
use crate::subjects::{
    self, ACTIVATE, ALL_DEAD_LETTERS, ALL_HEARTBEATS, ALL_HTTP, ALL_INVOKES, ALL_LOGS, APPS_BUCKET,
    ARTIFACTS_BUCKET, COMPONENTS_BUCKET, CONTROL_BUCKET, LEADER_ANNOUNCEMENTS, NAMESPACES_BUCKET,
    ROUTES_BUCKET, SCHEDULERS_BUCKET, SECRETS_BUCKET, TOKENS_BUCKET, USER_PREFIX,
};
use crate::wire::HostId;

/// Who a NATS credential belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    /// A scheduler: it commands hosts and owns desired state.
    Scheduler,
    /// One host.
    Host(HostId),
    /// The users' own NATS clients of one namespace.
    Namespace(Name),
    /// An operator's full-rights credential, for debugging with NATS tools.
    Admin,
}

/// Subjects allowed and denied for one direction (publish or subscribe).
/// A deny wins over an allow, as in nats-server.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rule {
    /// Subjects (with NATS wildcards) allowed.
    pub allow: Vec<String>,
    /// Subjects (with NATS wildcards) denied even where allowed.
    pub deny: Vec<String>,
}

/// What one identity may do on NATS.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Permissions {
    /// Publishing.
    pub publish: Rule,
    /// Subscribing.
    pub subscribe: Rule,
    /// May answer a request it received, whatever its reply subject (the
    /// NATS `allow_responses` permission, one reply per request).
    pub responses: bool,
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

impl Identity {
    /// The name the credential carries, and a single subject token.
    pub fn name(&self) -> String {
        match self {
            Identity::Scheduler => "scheduler".into(),
            Identity::Host(id) => format!("host-{id}"),
            Identity::Namespace(ns) => format!("ns-{ns}"),
            Identity::Admin => "admin".into(),
        }
    }

    /// Where this identity's replies arrive (`_INBOX.<name>`); clients must
    /// connect with it as their inbox prefix, as only it may be read.
    pub fn inbox_prefix(&self) -> String {
        subjects::inbox_prefix(&self.name())
    }

    /// What nats-server lets this identity do.
    pub fn permissions(&self) -> Permissions {
        let own_inbox = format!("{}.>", self.inbox_prefix());
        match self {
            Identity::Scheduler | Identity::Admin => Permissions {
                publish: Rule {
                    allow: strings(&[">"]),
                    deny: Vec::new(),
                },
                subscribe: Rule {
                    allow: strings(&[">"]),
                    deny: Vec::new(),
                },
                responses: true,
            },
            Identity::Host(id) => {
                let user_space = format!("{USER_PREFIX}.>");
                Permissions {
                    publish: Rule {
                        allow: vec![
                            subjects::heartbeat(id.as_str()),
                            ALL_INVOKES.into(),
                            ALL_HTTP.into(),
                            ACTIVATE.into(),
                            ALL_DEAD_LETTERS.into(),
                            ALL_LOGS.into(),
                            // Guests' messages, each under its own namespace.
                            user_space,
                            // JetStream: component bytes, app buckets, queues.
                            "$JS.API.>".into(),
                            "$JS.ACK.>".into(),
                            "$JS.FC.>".into(),
                            "$KV.>".into(),
                            // Core dumps, into each namespace's store.
                            "$O.>".into(),
                        ],
                        deny: vec![
                            // Component bytes, and the code compiled from
                            // them, are the scheduler's to write.
                            format!("$O.{COMPONENTS_BUCKET}.>"),
                            format!("$O.{ARTIFACTS_BUCKET}.>"),
                            // Desired state and secrets are the scheduler's.
                            format!("$KV.{APPS_BUCKET}.>"),
                            format!("$KV.{SECRETS_BUCKET}.>"),
                            format!("$KV.{TOKENS_BUCKET}.>"),
                            format!("$KV.{NAMESPACES_BUCKET}.>"),
                            format!("$KV.{CONTROL_BUCKET}.>"),
                            format!("$KV.{SCHEDULERS_BUCKET}.>"),
                            // The route table is the leader's to keep.
                            format!("$KV.{ROUTES_BUCKET}.>"),
                            "$JS.API.STREAM.CREATE.>".into(),
                            "$JS.API.STREAM.UPDATE.>".into(),
                            "$JS.API.STREAM.DELETE.>".into(),
                            "$JS.API.STREAM.PURGE.>".into(),
                            "$JS.API.STREAM.MSG.DELETE.>".into(),
                        ],
                    },
                    subscribe: Rule {
                        allow: vec![
                            subjects::host_commands(id.as_str()),
                            subjects::host_resync(id.as_str()),
                            ALL_HEARTBEATS.into(),
                            LEADER_ANNOUNCEMENTS.into(),
                            ALL_INVOKES.into(),
                            ALL_HTTP.into(),
                            own_inbox,
                        ],
                        deny: Vec::new(),
                    },
                    responses: true,
                }
            }
            Identity::Namespace(ns) => {
                let space = subjects::user_space(ns);
                Permissions {
                    publish: Rule {
                        allow: vec![space.clone()],
                        deny: Vec::new(),
                    },
                    subscribe: Rule {
                        allow: vec![space, own_inbox],
                        deny: Vec::new(),
                    },
                    responses: true,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::subject_matches;

    fn allowed(rule: &Rule, subject: &str) -> bool {
        rule.allow.iter().any(|p| subject_matches(p, subject))
            && !rule.deny.iter().any(|p| subject_matches(p, subject))
    }

    #[test]
    fn a_host_speaks_only_as_itself() {
        let h1 = Identity::Host(HostId::new("h1").unwrap()).permissions();
        assert!(allowed(&h1.publish, "shoal.v1.hosts.h1.heartbeat"));
        assert!(!allowed(&h1.publish, "shoal.v1.hosts.h2.heartbeat"));
        assert!(!allowed(&h1.publish, "shoal.v1.hosts.h2.cmd"));
        assert!(!allowed(&h1.publish, "shoal.v1.hosts.h1.cmd"));
        assert!(!allowed(&h1.publish, "$KV.shoal-apps.default.hello"));
        assert!(!allowed(&h1.publish, "$KV.shoal-control.leader"));
        assert!(allowed(&h1.subscribe, "shoal.v1.leader"));
        // Only schedulers announce a lease epoch or write the lease.
        assert!(!allowed(&h1.publish, "shoal.v1.leader"));
        assert!(!allowed(&h1.publish, "$KV.shoal-schedulers.scheduler-1"));
        assert!(allowed(&h1.publish, "$KV.shoal-kv_default_hello.k"));
        assert!(allowed(&h1.publish, "$O.shoal-dumps-default.C.abc"));
        assert!(!allowed(&h1.publish, "$O.shoal-components.C.abc"));
        assert!(!allowed(&h1.publish, "$O.shoal-components.M.abc"));
        assert!(!allowed(&h1.publish, "$O.shoal-artifacts.C.abc"));
        assert!(!allowed(&h1.publish, "$O.shoal-artifacts.M.abc"));
        assert!(allowed(&h1.subscribe, "shoal.v1.hosts.h1.cmd"));
        assert!(!allowed(&h1.subscribe, "shoal.v1.hosts.h2.cmd"));
        assert!(allowed(&h1.subscribe, "shoal.v1.hosts.h1.resync"));
        assert!(!allowed(&h1.publish, "$KV.shoal-routes.default.hello.web"));
        assert!(!allowed(&h1.subscribe, "shoal.v1.hosts.h2.resync"));
        assert!(!allowed(&h1.publish, "shoal.v1.hosts.h2.resync"));
        assert!(allowed(&h1.subscribe, "_INBOX.host-h1.abc"));
        assert!(!allowed(&h1.subscribe, "_INBOX.scheduler.abc"));
    }

    #[test]
    fn a_namespace_client_stays_in_its_namespace() {
        let a = Identity::Namespace(Name::new("team-a").unwrap()).permissions();
        assert!(allowed(&a.publish, "ns.team-a.orders"));
        assert!(!allowed(&a.publish, "ns.team-b.orders"));
        assert!(!allowed(&a.publish, "shoal.v1.hosts.h1.cmd"));
        assert!(!allowed(&a.publish, "shoal.v1.leader"));
        assert!(!allowed(&a.subscribe, "ns.team-b.>"));
        assert!(!allowed(&a.subscribe, ">"));
        assert!(allowed(&a.subscribe, "_INBOX.ns-team-a.x"));
    }
}
