//! The dashboard's markup: one function per page, over views the handlers
//! fill under the state lock. Everything interpolated is escaped by
//! [`maud`].

use axum::http::StatusCode;
use maud::{DOCTYPE, Markup, html};
use shoal_api::AppSpec;
use shoal_api::resources::{AppSummary, Event, HostInfo, PodInfo, PodState};

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
    /// Its spec.
    pub spec: AppSpec,
    /// Every replica copy, or its pending entry.
    pub pods: Vec<PodInfo>,
    /// Its recent events, newest first.
    pub events: Vec<Event>,
    /// Now, for ages.
    pub now_ms: u64,
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
                                td { (a.namespace) }
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
        p { "Status " span class={ "status " (s.status) } { (s.status) } ", revision " (s.revision) "." }
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
        section aria-labelledby="replicas" {
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
