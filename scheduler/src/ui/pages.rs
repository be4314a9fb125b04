//! The dashboard's markup: one function per page, over views the handlers
//! fill under the state lock. Everything interpolated is escaped by
//! [`maud`].

use axum::http::StatusCode;
use maud::{DOCTYPE, Markup, html};
use shoal_api::AppSpec;
use shoal_api::resources::{
    AppSummary, CanaryStatus, Event, HostInfo, NamespaceInfo, PodInfo, PodState, RolloutStatus,
    ShadowStatus,
};
use shoal_api::wire::ReplicaStatus;

/// What the overview shows.
pub struct Overview {
    /// Who is signed in.
    pub principal: String,
    /// Every host, when the principal may list them.
    pub hosts: Option<Vec<HostInfo>>,
    /// The apps the principal may list.
    pub apps: Vec<AppSummary>,
    /// Pending replicas and why, as words.
    pub pending: Vec<(String, String)>,
    /// Recent warning events, newest first.
    pub warnings: Vec<Event>,
    /// Now, for ages.
    pub now_ms: u64,
}

/// What an app's page shows.
pub struct AppView {
    /// Whether the principal may scale it: the scale form shows.
    pub may_scale: bool,
    /// Whether the principal may roll it back: the undo button shows.
    pub may_roll_back: bool,
    /// Whether the principal may read its logs: the live view shows.
    pub may_read_logs: bool,
    /// Who is signed in.
    pub principal: String,
    /// The app's summary.
    pub summary: AppSummary,
    /// Where its rollout stands, pod by pod (a canary's or shadow's
    /// figures among it).
    pub rollout: RolloutStatus,
    /// What its replicas did lately, step by step, oldest first.
    pub charts: Vec<crate::top::Point>,
    /// Its spec.
    pub spec: AppSpec,
    /// Every replica copy, or its pending entry.
    pub pods: Vec<PodInfo>,
    /// Its recent events, newest first.
    pub events: Vec<Event>,
    /// Now, for ages.
    pub now_ms: u64,
}

/// What the revisions page shows.
pub struct RevisionsView {
    /// Who is signed in.
    pub principal: String,
    /// The app's namespace.
    pub namespace: String,
    /// The app.
    pub name: String,
    /// Every kept revision, newest first: number, when, why.
    pub revisions: Vec<(u64, u64, String)>,
    /// The revision compared from (none: the first).
    pub from: Option<u64>,
    /// The revision compared to.
    pub to: u64,
    /// What changed, line by line.
    pub diff: Vec<DiffLine>,
    /// Now, for ages.
    pub now_ms: u64,
}

/// One line of a diff.
pub enum DiffLine {
    /// In both.
    Same(String),
    /// Only in the later revision.
    Added(String),
    /// Only in the earlier one.
    Removed(String),
}

/// A stored revision as text to compare: its spec as TOML (JSON if it
/// cannot be written as TOML), then its components' digests.
pub fn spec_text(stored: &crate::state::StoredApp) -> String {
    let mut text = toml::to_string_pretty(&stored.spec)
        .or_else(|_| serde_json::to_string_pretty(&stored.spec))
        .unwrap_or_default();
    text.push_str("\n# component bytes (sha256)\n");
    for (name, digest) in &stored.digests {
        text.push_str(&format!("{name} = {}\n", digest.to_hex()));
    }
    text
}

/// The lines of `after` against `before`.
pub fn line_diff(before: &str, after: &str) -> Vec<DiffLine> {
    similar::TextDiff::from_lines(before, after)
        .iter_all_changes()
        .map(|change| {
            let line = change.value().trim_end_matches('\n').to_string();
            match change.tag() {
                similar::ChangeTag::Equal => DiffLine::Same(line),
                similar::ChangeTag::Insert => DiffLine::Added(line),
                similar::ChangeTag::Delete => DiffLine::Removed(line),
            }
        })
        .collect()
}

/// An app's revisions and what changed between two.
pub fn revisions(v: &RevisionsView) -> Markup {
    let app = format!("/ui/apps/{}/{}", v.namespace, v.name);
    let body = html! {
        p { a href=(app) { "Back to " (v.namespace) "/" (v.name) } }
        section aria-labelledby="diff" {
            h2 #diff {
                @match v.from {
                    Some(from) => { "Revision " (from) " to " (v.to) }
                    None => { "Revision " (v.to) }
                }
            }
            @if v.diff.iter().all(|l| matches!(l, DiffLine::Same(_))) && v.from.is_some() {
                p.quiet { "The two revisions hold the same spec." }
            }
            pre.diff {
                @for line in &v.diff {
                    @match line {
                        DiffLine::Same(l) => { span.same { "  " (l) } "\n" }
                        DiffLine::Added(l) => { ins { "+ " (l) } "\n" }
                        DiffLine::Removed(l) => { del { "- " (l) } "\n" }
                    }
                }
            }
        }
        section aria-labelledby="kept" {
            h2 #kept { "Revisions kept" }
            table {
                thead { tr {
                    th scope="col" { "Revision" }
                    th scope="col" { "Age" }
                    th scope="col" { "Why" }
                    th scope="col" { "Compare" }
                } }
                tbody {
                    @for (r, at, cause) in &v.revisions {
                        tr {
                            td { (r) }
                            td { (age(v.now_ms, *at)) }
                            td { (cause) }
                            td {
                                @if let Some(before) = v.revisions.iter().map(|(x, _, _)| *x).filter(|x| x < r).max() {
                                    a href={ (app) "/revisions?from=" (before) "&to=" (r) } { "with " (before) }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    page(
        &format!("Revisions of {}/{}", v.namespace, v.name),
        Some(&v.principal),
        body,
    )
}

/// What the hosts page shows.
pub struct HostsView {
    /// Who is signed in.
    pub principal: String,
    /// Every host, in order of id.
    pub hosts: Vec<HostView>,
}

/// One host on the hosts page.
pub struct HostView {
    /// Its summary.
    pub info: HostInfo,
    /// The replica copies it runs (the first ones, when many).
    pub replicas: Vec<ReplicaStatus>,
    /// How many more it runs than are listed.
    pub more: usize,
}

/// What a namespace's page shows.
pub struct NamespaceView {
    /// Who is signed in.
    pub principal: String,
    /// Its settings and usage.
    pub info: NamespaceInfo,
    /// Its apps, when the principal may list them.
    pub apps: Vec<AppSummary>,
}

fn page(title: &str, principal: Option<&str>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · Shoal" }
                link rel="stylesheet" href="/ui/style.css";
                script src="/ui/live.js" defer {}
            }
            body {
                header {
                    a.brand href="/ui" { "Shoal" }
                    @if let Some(who) = principal {
                        form method="post" action="/ui/sign-out" {
                            span.who { "Signed in as " strong { (who) } }
                            button type="submit" { "Sign out" }
                        }
                    }
                }
                main { h1 { (title) } (body) }
            }
        }
    }
}

fn age(now_ms: u64, at_ms: u64) -> String {
    shoal_api::quantity::span(now_ms.saturating_sub(at_ms))
}

fn events_table(events: &[Event], now_ms: u64, with_app: bool) -> Markup {
    html! {
        @if events.is_empty() {
            p.quiet { "Nothing to report." }
        } @else {
            table {
                thead { tr {
                    th scope="col" { "Age" }
                    th scope="col" { "Reason" }
                    @if with_app { th scope="col" { "App" } }
                    th scope="col" { "Message" }
                } }
                tbody {
                    @for e in events {
                        tr.warning[e.reason.is_warning()] {
                            td { (age(now_ms, e.at_ms)) }
                            td { (e.reason) }
                            @if with_app {
                                td { a href={ "/ui/apps/" (e.namespace) "/" (e.app) } { (e.namespace) "/" (e.app) } }
                            }
                            td { (e.message) }
                        }
                    }
                }
            }
        }
    }
}

/// The overview: hosts, apps by namespace, pending replicas, warnings.
pub fn overview(v: &Overview) -> Markup {
    let body = html! {
        @if let Some(hosts) = &v.hosts {
            section aria-labelledby="hosts" {
                h2 #hosts { "Hosts" }
                p { a href="/ui/hosts" { "Every host and the replicas it runs" } }
                @if hosts.is_empty() {
                    p.quiet { "No host has joined yet." }
                } @else {
                    table {
                        thead { tr {
                            th scope="col" { "Host" }
                            th scope="col" { "State" }
                            th scope="col" { "Labels" }
                            th scope="col" { "Memory used" }
                            th scope="col" { "Slots used" }
                        } }
                        tbody {
                            @for h in hosts {
                                tr {
                                    td { (h.id) }
                                    td { (h.state) }
                                    td { @for (k, val) in &h.labels { span.label { (k) "=" (val) } " " } }
                                    td { (shoal_api::ByteSize::bytes(h.used_memory)) " of " (shoal_api::ByteSize::bytes(h.capacity.memory)) }
                                    td { (h.replicas) " of " (h.capacity.slots) }
                                }
                            }
                        }
                    }
                }
            }
        }
        section aria-labelledby="apps" {
            h2 #apps { "Apps" }
            @if v.apps.is_empty() {
                p.quiet { "No app yet: apply one with " code { "shoal apply APP.toml" } "." }
            } @else {
                table {
                    thead { tr {
                        th scope="col" { "Namespace" }
                        th scope="col" { "App" }
                        th scope="col" { "Status" }
                        th scope="col" { "Replicas running" }
                        th scope="col" { "Revision" }
                    } }
                    tbody {
                        @for a in &v.apps {
                            tr {
                                td { a href={ "/ui/namespaces/" (a.namespace) } { (a.namespace) } }
                                td { a href={ "/ui/apps/" (a.namespace) "/" (a.name) } { (a.name) } }
                                td { span class={ "status " (a.status) } { (a.status) } }
                                td { (running(a)) }
                                td { (a.revision) }
                            }
                        }
                    }
                }
            }
        }
        section aria-labelledby="pending" {
            h2 #pending { "Pending replicas" }
            @if v.pending.is_empty() {
                p.quiet { "None: every replica has a host." }
            } @else {
                table {
                    thead { tr { th scope="col" { "Replica" } th scope="col" { "Waiting for" } } }
                    tbody { @for (id, why) in &v.pending { tr { td { (id) } td { (why) } } } }
                }
            }
        }
        section aria-labelledby="warnings" {
            h2 #warnings { "Recent warnings" }
            (events_table(&v.warnings, v.now_ms, true))
        }
    };
    page("Overview", Some(&v.principal), body)
}

/// Every host with the replicas it runs.
pub fn hosts(v: &HostsView) -> Markup {
    let body = html! {
        @if v.hosts.is_empty() {
            p.quiet { "No host has joined yet." }
        }
        @for h in &v.hosts {
            section aria-labelledby={ "host-" (h.info.id) } {
                h2 id={ "host-" (h.info.id) } { (h.info.id) }
                p {
                    (h.info.state) "; memory " (shoal_api::ByteSize::bytes(h.info.used_memory)) " of "
                    (shoal_api::ByteSize::bytes(h.info.capacity.memory)) ", slots " (h.info.replicas) " of " (h.info.capacity.slots)
                    @if let Some(http) = &h.info.http { "; ingress " code { (http) } }
                    @for (k, val) in &h.info.labels { " " span.label { (k) "=" (val) } }
                }
                @if h.replicas.is_empty() {
                    p.quiet { "No replica runs here." }
                } @else {
                    table {
                        caption { "Replicas on " (h.info.id) }
                        thead { tr {
                            th scope="col" { "Replica" }
                            th scope="col" { "Generation" }
                            th scope="col" { "State" }
                            th scope="col" { "Ready" }
                            th scope="col" { "Restarts" }
                            th scope="col" { "Memory" }
                        } }
                        tbody {
                            @for r in &h.replicas {
                                tr {
                                    td { a href={ "/ui/apps/" (r.id.namespace) "/" (r.id.app) } { (r.id) } }
                                    td { (r.revision) }
                                    td { (r.state.label()) }
                                    td { @if r.ready { "yes" } @else { "no" } }
                                    td { (r.restarts) }
                                    td { (shoal_api::ByteSize::bytes(r.memory)) }
                                }
                            }
                        }
                    }
                    @if h.more > 0 { p.quiet { "and " (h.more) " more" } }
                }
            }
        }
    };
    page("Hosts", Some(&v.principal), body)
}

/// A namespace: its quota against its usage, its routes, its apps.
pub fn namespace(v: &NamespaceView) -> Markup {
    let q = &v.info.spec.quota;
    let u = &v.info.usage;
    let limit = |l: Option<String>| l.unwrap_or_else(|| "no limit".into());
    let rows = [
        (
            "Replicas",
            u.replicas.to_string(),
            limit(q.replicas.map(|n| n.to_string())),
        ),
        (
            "Memory",
            u.memory.to_string(),
            limit(q.memory.map(|b| b.to_string())),
        ),
        (
            "Component bytes",
            u.component_bytes.to_string(),
            limit(q.component_bytes.map(|b| b.to_string())),
        ),
        (
            "Storage",
            u.storage.to_string(),
            limit(q.storage.map(|b| b.to_string())),
        ),
        (
            "Secrets",
            u.secrets.to_string(),
            limit(q.secrets.map(|n| n.to_string())),
        ),
    ];
    let body = html! {
        section aria-labelledby="quota" {
            h2 #quota { "Quota and usage" }
            table {
                thead { tr {
                    th scope="col" { "Resource" }
                    th scope="col" { "Used" }
                    th scope="col" { "Quota" }
                } }
                tbody {
                    @for (what, used, quota) in &rows {
                        tr { td { (what) } td { (used) } td { (quota) } }
                    }
                }
            }
        }
        @if !v.info.spec.routes.is_empty() {
            section aria-labelledby="routes" {
                h2 #routes { "Routes it owns" }
                ul {
                    @for r in &v.info.spec.routes {
                        li { code { (r.host.as_deref().unwrap_or("any host")) " " (r.prefix) } }
                    }
                }
            }
        }
        section aria-labelledby="apps" {
            h2 #apps { "Apps" }
            @if v.apps.is_empty() {
                p.quiet { "None that you may see." }
            } @else {
                table {
                    thead { tr {
                        th scope="col" { "App" }
                        th scope="col" { "Status" }
                        th scope="col" { "Replicas running" }
                        th scope="col" { "Revision" }
                    } }
                    tbody {
                        @for a in &v.apps {
                            tr {
                                td { a href={ "/ui/apps/" (a.namespace) "/" (a.name) } { (a.name) } }
                                td { span class={ "status " (a.status) } { (a.status) } }
                                td { (running(a)) }
                                td { (a.revision) }
                            }
                        }
                    }
                }
            }
        }
    };
    page(
        &format!("Namespace {}", v.info.name),
        Some(&v.principal),
        body,
    )
}

/// Replicas running over wanted, summed over an app's pods.
fn running(a: &AppSummary) -> String {
    let mut seen = std::collections::BTreeSet::new();
    let (mut up, mut wanted) = (0, 0);
    for c in &a.components {
        if seen.insert(&c.pod) {
            up += c.running;
            wanted += c.desired;
        }
    }
    format!("{up} of {wanted}")
}

/// An app: its components, its replicas, its events.
pub fn app(v: &AppView) -> Markup {
    let s = &v.summary;
    let body = html! {
        p {
            "Status " span class={ "status " (s.status) } { (s.status) } ", revision " (s.revision) ". "
            a href={ "/ui/apps/" (s.namespace) "/" (s.name) "/revisions" } { "What changed in revision " (s.revision) }
        }
        @if v.may_roll_back {
            form.inline method="post" action={ "/ui/apps/" (s.namespace) "/" (s.name) "/undo" } {
                button type="submit" { "Undo the last rollout" }
            }
        }
        section aria-labelledby="components" {
            h2 #components { "Components" }
            table {
                thead { tr {
                    th scope="col" { "Component" }
                    th scope="col" { "Kind" }
                    th scope="col" { "Route or queue" }
                    th scope="col" { "Pod" }
                    th scope="col" { "Replicas running" }
                } }
                tbody {
                    @for c in &s.components {
                        @let spec = v.spec.components.get(&c.name);
                        tr {
                            td { (c.name) }
                            td { (c.kind) }
                            td {
                                @if let Some(route) = spec.and_then(|s| s.route.as_deref()) { code { (route) } }
                                @if let Some(queue) = spec.and_then(|s| s.queue.as_ref()) { code { (queue) } }
                            }
                            td { (c.pod) }
                            td {
                                (c.running) " of " (c.desired)
                                @if v.may_scale {
                                    form.inline method="post" action={ "/ui/apps/" (s.namespace) "/" (s.name) "/scale" } {
                                        input type="hidden" name="component" value=(c.name);
                                        label for={ "replicas-" (c.name) } { "Replicas of " (c.name) }
                                        input id={ "replicas-" (c.name) } type="number" name="replicas" min="0" value=(c.desired);
                                        button type="submit" { "Scale" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        section #activity-section data-refresh aria-labelledby="activity" {
            h2 #activity { "Activity" }
            p.quiet { "Each point is " (crate::tunables::CHART_STEP.as_secs()) " s of every replica's invocations, over the last "
                (crate::tunables::CHART_STEP.as_secs() * v.charts.len() as u64 / 60) " minutes." }
            div.charts {
                (chart("Invocations a second", "/s", &v.charts.iter().map(|p| p.invocations_per_s).collect::<Vec<_>>()))
                (chart("Failures a second", "/s", &v.charts.iter().map(|p| p.errors_per_s).collect::<Vec<_>>()))
                (chart("p99 duration", " ms", &v.charts.iter().map(|p| p.p99_ms.unwrap_or(0.0)).collect::<Vec<_>>()))
            }
        }
        section #rollout-section data-refresh aria-labelledby="rollout" {
            h2 #rollout { "Rollout" }
            @for p in &v.rollout.pods {
                p { "Pod " strong { (p.pod) } ", generation " (p.generation) " (" (p.state) "): " (p.message) }
                @if let Some(c) = &p.canary { (canary_table(c)) }
                @if let Some(sh) = &p.shadow { (shadow_table(sh)) }
                @if v.may_roll_back && (p.canary.is_some() || p.shadow.is_some()) {
                    form.inline method="post" action={ "/ui/apps/" (s.namespace) "/" (s.name) "/promote" } {
                        button type="submit" { "Promote" }
                    }
                    form.inline method="post" action={ "/ui/apps/" (s.namespace) "/" (s.name) "/abort" } {
                        button type="submit" { "Abort" }
                    }
                }
            }
        }
        section #replicas-section data-refresh aria-labelledby="replicas" {
            h2 #replicas { "Replicas" }
            table {
                thead { tr {
                    th scope="col" { "Replica" }
                    th scope="col" { "Host" }
                    th scope="col" { "Generation" }
                    th scope="col" { "State" }
                    th scope="col" { "Ready" }
                    th scope="col" { "Restarts" }
                    th scope="col" { "Last error" }
                } }
                tbody {
                    @for p in &v.pods {
                        tr {
                            td { (p.id) }
                            td { @if let Some(h) = &p.host { (h) } @else { "–" } }
                            td { (p.revision) }
                            td { (pod_state(&p.state)) }
                            td { @if p.ready { "yes" } @else { "no" } }
                            td { (p.restarts) }
                            td { (p.last_error.as_deref().unwrap_or("")) }
                        }
                    }
                }
            }
        }
        @if v.may_read_logs {
            section aria-labelledby="logs" {
                h2 #logs { "Logs" }
                label for="log-filter" { "Show only lines with" }
                input #log-filter type="search" autocomplete="off";
                p #log-status .quiet aria-live="polite" {
                    "The live view needs JavaScript; "
                    code { "shoal logs " (s.name) " -f" } " follows the same lines."
                }
                pre #log data-src={ "/ui/apps/" (s.namespace) "/" (s.name) "/logs?follow=true&tail=50" }
                    data-filter="log-filter" data-status="log-status" {}
            }
        }
        section aria-labelledby="events" {
            h2 #events { "Events" }
            (events_table(&v.events, v.now_ms, false))
        }
    };
    page(
        &format!("{}/{}", s.namespace, s.name),
        Some(&v.principal),
        body,
    )
}

/// A small line chart of `values` (oldest first), its latest value and
/// highest in words beside it, for a screen reader as well.
fn chart(title: &str, unit: &str, values: &[f64]) -> Markup {
    const W: f64 = 240.0;
    const H: f64 = 48.0;
    let highest = values.iter().copied().fold(0.0_f64, f64::max);
    let latest = values.last().copied().unwrap_or(0.0);
    let step = if values.len() > 1 {
        W / (values.len() - 1) as f64
    } else {
        W
    };
    let points: Vec<String> = values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let y = if highest > 0.0 {
                H - 2.0 - (v / highest) * (H - 4.0)
            } else {
                H - 2.0
            };
            format!("{:.1},{:.1}", i as f64 * step, y)
        })
        .collect();
    let words = format!("latest {latest:.1}{unit}, highest {highest:.1}{unit}");
    html! {
        figure.chart {
            svg role="img" aria-label={ (title) ": " (words) } viewBox={ "0 0 " (W) " " (H) } width=(W) height=(H) {
                polyline points=(points.join(" ")) fill="none" stroke="currentColor" stroke-width="2" {}
            }
            figcaption { strong { (title) } ": " (words) }
        }
    }
}

/// A canary's step and both sides' figures.
fn canary_table(c: &CanaryStatus) -> Markup {
    let p99 = |us: Option<u64>| {
        us.map_or_else(
            || "–".to_string(),
            |us| format!("{:.1} ms", us as f64 / 1000.0),
        )
    };
    html! {
        p {
            "Canary at step " (c.step) " of " (c.steps) ", taking " strong { (c.share) } " of requests"
            @if !c.ready { " (its replica is not ready yet)" }
            "."
        }
        table {
            caption { "This step's figures" }
            thead { tr {
                th scope="col" { "Side" }
                th scope="col" { "Generation" }
                th scope="col" { "Requests" }
                th scope="col" { "Failed" }
                th scope="col" { "Failure rate" }
                th scope="col" { "p99" }
            } }
            tbody {
                @for (side, generation, f) in [("canary", c.generation, &c.canary), ("stable", c.stable_generation, &c.stable)] {
                    tr {
                        td { (side) }
                        td { (generation) }
                        td { (f.requests) }
                        td { (f.errors) }
                        td { (format!("{:.1}%", f.error_rate() * 100.0)) }
                        td { (p99(f.p99_us)) }
                    }
                }
            }
        }
    }
}

/// A shadow's report and its first differences.
fn shadow_table(sh: &ShadowStatus) -> Markup {
    let r = &sh.report;
    html! {
        p {
            "Shadow of generation " (sh.generation) " beside " (sh.stable_generation) ", copying " strong { (sh.share) } " of requests"
            @if sh.finished { " (finished: promote or abort)" } @else if !sh.ready { " (its replica is not ready yet)" }
            ": " (r.compared) " answers compared, " (r.status_differed) " with another status, "
            (r.body_differed) " with another body."
        }
        @if !r.examples.is_empty() {
            table {
                caption { "First differences" }
                thead { tr {
                    th scope="col" { "Request" }
                    th scope="col" { "Stable" }
                    th scope="col" { "Shadow" }
                } }
                tbody {
                    @for d in &r.examples {
                        tr {
                            td { code { (d.request) } }
                            td { (d.stable_status) " " code { (d.stable_body) } }
                            td { (d.shadow_status) " " code { (d.shadow_body) } }
                        }
                    }
                }
            }
        }
    }
}

fn pod_state(state: &PodState) -> String {
    match state {
        PodState::Host(s) => s.label().to_string(),
        PodState::Pending { reason } => format!("pending: {reason}"),
    }
}

/// The sign-in form, with what went wrong last time.
pub fn sign_in(error: Option<&str>) -> Markup {
    let body = html! {
        @if let Some(error) = error {
            p.error role="alert" { (error) }
        }
        form method="post" action="/ui/sign-in" {
            label for="token" { "Token" }
            input #token type="password" name="token" autocomplete="off" required;
            p.quiet { "A token as " code { "shoal auth token create" } " prints it; " code { "shoal up" } " wrote one for you in the client config it made." }
            button type="submit" { "Sign in" }
        }
    };
    page("Sign in", None, body)
}

/// A refusal, in the API's words.
pub fn refused(status: StatusCode, error: &str) -> Markup {
    let body = html! {
        p.error role="alert" { (error) }
        p { a href="/ui" { "Back to the overview" } }
    };
    page(status.canonical_reason().unwrap_or("Refused"), None, body)
}
