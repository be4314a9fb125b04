//! NATS subject names and JetStream resource names: the one place they are
//! spelled. Everything is versioned and namespaced under `shoal.v1`.

use crate::Name;

/// Every subject Shoal uses starts with this.
pub const PREFIX: &str = "shoal.v1";

/// Heartbeats of every host: `shoal.v1.hosts.*.heartbeat`.
pub const ALL_HEARTBEATS: &str = "shoal.v1.hosts.*.heartbeat";

/// Events of every app: `shoal.v1.events.>`.
pub const ALL_EVENTS: &str = "shoal.v1.events.>";

/// Where host `host` publishes its heartbeat:
/// [`HOSTS_PREFIX`], the host, [`HEARTBEAT_SUFFIX`].
pub fn heartbeat(host: &str) -> String {
    format!("{HOSTS_PREFIX}{host}{HEARTBEAT_SUFFIX}")
}

/// What every host's subjects start with.
pub const HOSTS_PREFIX: &str = "shoal.v1.hosts.";

/// What a heartbeat's subject ends with.
pub const HEARTBEAT_SUFFIX: &str = ".heartbeat";

/// JetStream key-value bucket of the cluster's route table
/// ([`crate::wire::RouteEntry`]): written by the leading scheduler, read by
/// every ingress.
pub const ROUTES_BUCKET: &str = "shoal-routes";

/// The key of a component's route in [`ROUTES_BUCKET`].
pub fn route_key(namespace: &Name, app: &Name, component: &Name) -> String {
    format!("{namespace}.{app}.{component}")
}

/// Where an ingress asks the scheduler to wake a component scaled to zero
/// ([`crate::wire::Activate`], request/reply).
pub const ACTIVATE: &str = "shoal.v1.activate";

/// Where host `host` takes commands (request/reply).
pub fn host_commands(host: &str) -> String {
    format!("{PREFIX}.hosts.{host}.cmd")
}

/// Where a receiver that lost track of a host's beats asks it for a
/// snapshot ([`crate::beats`]).
pub fn host_resync(host: &str) -> String {
    format!("{PREFIX}.hosts.{host}.resync")
}

/// Where the replicas of a worker component take invocations, in a queue
/// group: service discovery and load balancing in one.
pub fn invoke(namespace: &Name, app: &Name, component: &Name) -> String {
    format!("{PREFIX}.invoke.{namespace}.{app}.{component}")
}

/// The queue group every replica of a component joins on its invoke subject.
pub fn invoke_queue_group(namespace: &Name, app: &Name, component: &Name) -> String {
    format!("{namespace}.{app}.{component}")
}

/// Where the replicas of an http component take requests forwarded by
/// other hosts' ingresses, in a queue group named by
/// [`invoke_queue_group`].
pub fn http(namespace: &Name, app: &Name, component: &Name) -> String {
    format!("{PREFIX}.http.{namespace}.{app}.{component}")
}

/// Where a pod's canary replica takes the HTTP requests an ingress sends
/// it during a canary ([`http`] with `.canary` after it): the canary keeps
/// out of the stable replicas' queue group, so its share of requests is
/// the share the ingress chose, however many replicas the pod has.
pub fn http_canary(namespace: &Name, app: &Name, component: &Name) -> String {
    format!("{}.canary", http(namespace, app, component))
}

/// Where a pod's canary replica takes invocations during a canary, as
/// [`http_canary`] is for requests.
pub fn invoke_canary(namespace: &Name, app: &Name, component: &Name) -> String {
    format!("{}.canary", invoke(namespace, app, component))
}

/// Where a pod's shadow replica takes the copies of requests an ingress
/// sends it ([`http`] with `.shadow` after it).
pub fn http_shadow(namespace: &Name, app: &Name, component: &Name) -> String {
    format!("{}.shadow", http(namespace, app, component))
}

/// Where a pod's shadow replica takes copies of invocations.
pub fn invoke_shadow(namespace: &Name, app: &Name, component: &Name) -> String {
    format!("{}.shadow", invoke(namespace, app, component))
}

/// The JetStream work-queue stream holding a worker's `queue` subject.
pub fn queue_stream(namespace: &Name, app: &Name, component: &Name) -> String {
    format!("SHOAL_Q_{namespace}_{app}_{component}")
}

/// The durable pull consumer every replica of a queue worker shares.
pub const QUEUE_CONSUMER: &str = "shoal-workers";

/// Where a worker's messages go after their last failed delivery.
pub fn dead_letters(namespace: &Name, app: &Name, component: &Name) -> String {
    format!("{PREFIX}.dead.{namespace}.{app}.{component}")
}

/// The heartbeat subject of every host, as NATS permissions write it.
pub const ANY_HOST_HEARTBEAT: &str = ALL_HEARTBEATS;

/// Every invoke subject.
pub const ALL_INVOKES: &str = "shoal.v1.invoke.>";

/// Every forwarded-HTTP subject.
pub const ALL_HTTP: &str = "shoal.v1.http.>";

/// Every log subject.
pub const ALL_LOGS: &str = "shoal.v1.logs.>";

/// Every dead-letter subject.
pub const ALL_DEAD_LETTERS: &str = "shoal.v1.dead.>";

/// The stream keeping dead letters until the user reads them.
pub const DEAD_LETTER_STREAM: &str = "SHOAL_DEAD";

/// Where events about an app are published.
pub fn events(namespace: &Name, app: &Name) -> String {
    format!("{PREFIX}.events.{namespace}.{app}")
}

/// Where guest logs of a component are published.
pub fn logs(namespace: &Name, app: &Name, component: &Name) -> String {
    format!("{PREFIX}.logs.{namespace}.{app}.{component}")
}

/// Every log subject of one namespace.
pub fn namespace_logs(namespace: &Name) -> String {
    format!("{PREFIX}.logs.{namespace}.>")
}

/// Log subjects of an app, or of one of its components.
pub fn app_logs(namespace: &Name, app: &Name, component: Option<&Name>) -> String {
    match component {
        Some(c) => logs(namespace, app, c),
        None => format!("{PREFIX}.logs.{namespace}.{app}.*"),
    }
}

/// The JetStream stream holding one namespace's logs, with that
/// namespace's retention.
pub fn logs_stream(namespace: &Name) -> String {
    format!("SHOAL_LOGS_{namespace}")
}

/// The object store holding `namespace`'s core dumps.
pub fn dumps_bucket(namespace: &Name) -> String {
    format!("shoal-dumps-{namespace}")
}

/// JetStream key-value bucket holding desired state: one key per app.
pub const APPS_BUCKET: &str = "shoal-apps";

/// JetStream object store holding component bytes, by sha256.
pub const COMPONENTS_BUCKET: &str = "shoal-components";

/// The object store of components compiled once for the cluster: only
/// schedulers write it, hosts read it.
pub const ARTIFACTS_BUCKET: &str = "shoal-artifacts";

/// The name, in [`ARTIFACTS_BUCKET`], of component `digest` compiled by an
/// engine whose compatibility hash is `engine` (hex).
pub fn artifact_name(digest: &crate::Digest, engine: &str) -> String {
    format!("{}.{engine}", digest.to_hex())
}

/// JetStream stream holding events.
pub const EVENTS_STREAM: &str = "SHOAL_EVENTS";

/// JetStream key-value bucket holding secrets, encrypted: one key per
/// `namespace.name`.
pub const SECRETS_BUCKET: &str = "shoal-secrets";

/// JetStream key-value bucket holding API tokens (hashed): one key per
/// token id.
pub const TOKENS_BUCKET: &str = "shoal-tokens";

/// JetStream key-value bucket holding namespaces and their quotas: one key
/// per namespace.
pub const NAMESPACES_BUCKET: &str = "shoal-namespaces";

/// JetStream key-value bucket holding what the leading scheduler decided
/// and must remember: the leader lease ([`LEADER_KEY`]), autoscaled
/// counts, rollout progress and finished jobs. Only schedulers write it.
pub const CONTROL_BUCKET: &str = "shoal-control";

/// The key of the leader lease in [`CONTROL_BUCKET`].
pub const LEADER_KEY: &str = "leader";

/// JetStream key-value bucket where each running scheduler says it is
/// there; an entry not renewed expires with the bucket's age limit.
pub const SCHEDULERS_BUCKET: &str = "shoal-schedulers";

/// Where the leading scheduler announces its lease epoch
/// ([`crate::wire::LeaderAnnouncement`]) so that every host learns it even
/// before the leader sends it a command.
pub const LEADER_ANNOUNCEMENTS: &str = "shoal.v1.leader";

/// The file storage JetStream offers on a nats-server Shoal starts itself
/// (`shoal up` and the tests), for its `max_file_store` setting.
///
/// JetStream counts each stream's size limit as reserved from the moment
/// the stream is made, and by default offers 75% of the disk free at start.
/// Shoal's limits are ceilings, not expected use (a queue stream per
/// component, a logs stream per namespace), so with a few apps their sum
/// passes what a small disk offers although little is stored. A stated
/// size makes the reservation an upper bound instead; disk use is then
/// watched like any other server's.
pub const JETSTREAM_MAX_FILE_STORE: &str = "1TB";

/// The largest message a nats-server Shoal starts itself carries, for its
/// `max_payload` setting (NATS's default is 1 MiB). An HTTP request
/// forwarded to another host's replica, and its response, each travel as
/// one message: this lets bodies up to the ingress's 16 MiB limit pass
/// with room for their headers. A server with a smaller `max_payload`
/// still works; bodies over what it carries get 413 (requests) or 502
/// (responses) with a message naming this setting.
pub const NATS_MAX_PAYLOAD: &str = "24MB";

/// JetStream stream holding the audit trail of mutating API calls.
pub const AUDIT_STREAM: &str = "SHOAL_AUDIT";

/// Every audit record's subject.
pub const ALL_AUDIT: &str = "shoal.v1.audit.>";

/// The subject of an audit record about `namespace`, or about a
/// cluster-wide resource (`_cluster`: names cannot start with `_`).
pub fn audit(namespace: Option<&Name>) -> String {
    match namespace {
        Some(ns) => format!("shoal.v1.audit.{ns}"),
        None => "shoal.v1.audit._cluster".to_string(),
    }
}

/// The key-value bucket private to an app. `_` separates the parts: names
/// cannot contain it, so `team-a/db` and `team/a-db` get different buckets.
pub fn app_bucket(namespace: &Name, app: &Name) -> String {
    format!("shoal-kv_{namespace}_{app}")
}

/// The scratch bucket a shadow replica's key-value writes go to, so that
/// they never reach the app's own ([`app_bucket`] with `_shadow` after it:
/// names hold no `_`, so it is no other app's).
pub fn shadow_bucket(namespace: &Name, app: &Name) -> String {
    format!("{}_shadow", app_bucket(namespace, app))
}

/// The first token of every namespace's own subject space: workloads and
/// the users' NATS clients of namespace `<ns>` live under `ns.<ns>.>`.
pub const USER_PREFIX: &str = "ns";

/// Where a subject `subject` of namespace `namespace`, as a spec or a
/// guest writes it, lives on the wire. The namespace comes from the app,
/// never from the guest, so nothing outside `ns.<namespace>.` can be named.
pub fn user_subject(namespace: &Name, subject: &str) -> String {
    format!("{USER_PREFIX}.{namespace}.{subject}")
}

/// Every subject of namespace `namespace`: `ns.<namespace>.>`.
pub fn user_space(namespace: &Name) -> String {
    format!("{USER_PREFIX}.{namespace}.>")
}

/// The reply-subject prefix of one NATS identity (`_INBOX.<who>`), so that
/// NATS permissions can let each identity read only its own replies.
/// `who` must be one subject token (a host id, `scheduler`, `ns-<name>`).
pub fn inbox_prefix(who: &str) -> String {
    format!("_INBOX.{who}")
}

/// The key of an app in [`APPS_BUCKET`].
pub fn app_key(namespace: &Name, app: &Name) -> String {
    format!("{namespace}.{app}")
}

/// Headers on invocation messages.
pub mod headers {
    /// Set on a reply when the invocation failed: the failure's label
    /// (`fuel_exhausted`, `deadline`, …). The payload is the message.
    pub const ERROR: &str = "Shoal-Error";
    /// The replica that served an invocation or request.
    pub const REPLICA: &str = "Shoal-Replica";
    /// On every HTTP response from an ingress: the host whose replica served it.
    pub const SERVED_BY: &str = "Shoal-Served-By";
    /// On a dead letter: the subject it was first published on.
    pub const DEAD_SUBJECT: &str = "Shoal-Dead-Subject";
    /// On a dead letter: why its last delivery failed.
    pub const DEAD_REASON: &str = "Shoal-Dead-Reason";
    /// On a dead letter: how many times it was delivered.
    pub const DEAD_DELIVERIES: &str = "Shoal-Dead-Deliveries";
    /// On a forwarded HTTP request: its method.
    pub const HTTP_METHOD: &str = "Shoal-Http-Method";
    /// On a forwarded HTTP request: its path and query.
    pub const HTTP_PATH: &str = "Shoal-Http-Path";
    /// On a forwarded HTTP response: its status code.
    pub const HTTP_STATUS: &str = "Shoal-Http-Status";
    /// On an invocation: record the host calls it makes and send them back
    /// (`shoal invoke --trace`). Any value turns it on.
    pub const TRACE_CALLS: &str = "Shoal-Trace-Calls";
    /// On the reply to an invocation with [`TRACE_CALLS`]: its host calls,
    /// as JSON ([`HostCalls`](crate::trace::HostCalls)).
    pub const HOST_CALLS: &str = "Shoal-Host-Calls";

    /// Every header of a NATS message as name/value pairs, in order.
    #[cfg(feature = "nats")]
    pub fn to_pairs(headers: Option<&async_nats::HeaderMap>) -> Vec<(String, String)> {
        headers
            .map(|h| {
                h.iter()
                    .flat_map(|(k, vs)| vs.iter().map(move |v| (k.to_string(), v.to_string())))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// A NATS header map holding `pairs`.
    #[cfg(feature = "nats")]
    pub fn from_pairs<'a>(
        pairs: impl IntoIterator<Item = &'a (String, String)>,
    ) -> Result<async_nats::HeaderMap, String> {
        let mut map = async_nats::HeaderMap::new();
        for (k, v) in pairs {
            // Parsed, never converted: a conversion asserts, and these come
            // from API callers and guests.
            let refused =
                || format!("header name {k:?} is not allowed: use printable ASCII but ':'");
            if k.is_empty() {
                return Err(refused());
            }
            let name: async_nats::HeaderName = k.parse().map_err(|_| refused())?;
            let value: async_nats::HeaderValue = v
                .parse()
                .map_err(|_| format!("the value of header {k} holds a line break"))?;
            map.append(name, value);
        }
        Ok(map)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_are_namespaced_and_versioned() {
        let n = |s: &str| Name::new(s).unwrap();
        assert_eq!(heartbeat("h1"), "shoal.v1.hosts.h1.heartbeat");
        assert_eq!(host_commands("h1"), "shoal.v1.hosts.h1.cmd");
        assert_eq!(
            invoke(&n("default"), &n("echo"), &n("echo")),
            "shoal.v1.invoke.default.echo.echo"
        );
        assert_eq!(
            events(&n("default"), &n("shop")),
            "shoal.v1.events.default.shop"
        );
        assert!(events(&n("a"), &n("b")).starts_with(&ALL_EVENTS[..ALL_EVENTS.len() - 1]));
    }

    #[test]
    fn names_of_different_apps_never_collide() {
        let n = |s: &str| Name::new(s).unwrap();
        assert_ne!(
            app_bucket(&n("team-a"), &n("db")),
            app_bucket(&n("team"), &n("a-db"))
        );
        assert_ne!(
            queue_stream(&n("team-a"), &n("db"), &n("w")),
            queue_stream(&n("team"), &n("a-db"), &n("w"))
        );
        assert_eq!(
            user_subject(&n("team-a"), "orders.created"),
            "ns.team-a.orders.created"
        );
        assert_eq!(user_space(&n("team-a")), "ns.team-a.>");
    }
}
