//! The web dashboard at `/ui`, end to end over HTTP against a real
//! scheduler and host: signing in with a token, the overview, an app's
//! page, and what the session cookie may and may not do.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::time::Duration;

use shoal_tests::cluster::Cluster;
use shoal_tests::{HttpReply, http_exchange};

const LIMIT: Duration = Duration::from_secs(10);

fn call(
    api: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> HttpReply {
    http_exchange(api, &api.to_string(), headers, method, path, body, LIMIT).unwrap()
}

/// GETs a page with the session `cookie`.
fn page(api: SocketAddr, path: &str, cookie: &str) -> HttpReply {
    call(api, "GET", path, &[("Cookie", cookie)], b"")
}

/// Sends a page's form to `path` with the session `cookie`, from `site`
/// (what the browser puts in `Sec-Fetch-Site`).
fn send_form(api: SocketAddr, path: &str, cookie: &str, site: &str, body: &str) -> HttpReply {
    let headers = [
        ("Cookie", cookie),
        ("Sec-Fetch-Site", site),
        ("Content-Type", "application/x-www-form-urlencoded"),
    ];
    call(api, "POST", path, &headers, body.as_bytes())
}

/// Signs in with `token`; the session cookie to send back.
fn sign_in(api: SocketAddr, token: &str) -> String {
    let form = format!("token={token}");
    let reply = call(
        api,
        "POST",
        "/ui/sign-in",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        form.as_bytes(),
    );
    assert_eq!(reply.status, 303, "{reply:?}");
    assert_eq!(reply.header("location"), Some("/ui"));
    let cookie = reply.header("set-cookie").unwrap().to_string();
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/ui"] {
        assert!(cookie.contains(attribute), "{cookie}");
    }
    cookie.split(';').next().unwrap().to_string()
}

#[test]
fn the_dashboard_shows_what_the_principal_may_see_and_the_cookie_reads_pages_only() {
    let mut cluster = Cluster::start().unwrap();
    let ingress = cluster.start_host("h1", "zone=a").unwrap();
    let api: SocketAddr = format!("127.0.0.1:{}", cluster.scheduler_ports()[0])
        .parse()
        .unwrap();
    let hello = cluster
        .spec(
            "hello.toml",
            "name = \"hello\"\n[components.web]\nsource = \"SOURCE(hello-http)\"\nkind = \"http\"\nroute = \"/hello\"\nreplicas = 2\n",
        )
        .unwrap();
    cluster.ok(&["apply", &hello, "--wait"]).unwrap();
    cluster.create_namespace("team-b").unwrap();
    let other = cluster
        .spec(
            "other.toml",
            "name = \"secretive\"\nnamespace = \"team-b\"\n[components.web]\nsource = \"SOURCE(hello-http)\"\nkind = \"http\"\nroute = \"/b\"\n",
        )
        .unwrap();
    cluster.ok(&["apply", &other]).unwrap();

    // Not signed in: pages send the browser to the sign-in form, which
    // labels its one field.
    let reply = call(api, "GET", "/ui", &[], b"");
    assert_eq!(reply.status, 303, "{reply:?}");
    assert_eq!(reply.header("location"), Some("/ui/sign-in"));
    let form = call(api, "GET", "/ui/sign-in", &[], b"");
    assert_eq!(form.status, 200);
    assert!(form.body.contains("<label for=\"token\">"), "{}", form.body);
    assert!(form.body.contains("id=\"token\""), "{}", form.body);

    // A wrong token is refused on the form, with the reason.
    let reply = call(
        api,
        "POST",
        "/ui/sign-in",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        b"token=shoal_0000000000000000_nope",
    );
    assert_eq!(reply.status, 401, "{reply:?}");
    assert!(reply.header("set-cookie").is_none());
    assert!(reply.body.contains("role=\"alert\""), "{}", reply.body);

    // A sign-in form on another site is refused: no login forgery.
    let reply = call(
        api,
        "POST",
        "/ui/sign-in",
        &[
            ("Content-Type", "application/x-www-form-urlencoded"),
            ("Sec-Fetch-Site", "cross-site"),
        ],
        format!("token={}", cluster.admin_token().unwrap()).as_bytes(),
    );
    assert_eq!(reply.status, 403, "{reply:?}");
    assert!(reply.header("set-cookie").is_none());

    // The admin sees hosts, both namespaces' apps, and an app's replicas.
    let admin = sign_in(api, &cluster.admin_token().unwrap());
    let overview = page(api, "/ui", &admin);
    assert_eq!(overview.status, 200, "{overview:?}");
    assert!(
        overview
            .header("content-type")
            .unwrap()
            .starts_with("text/html")
    );
    for shown in [
        "Hosts",
        "h1",
        "zone=a",
        "/ui/apps/default/hello",
        "running",
        "secretive",
    ] {
        assert!(
            overview.body.contains(shown),
            "{shown} not in {}",
            overview.body
        );
    }
    let app = page(api, "/ui/apps/default/hello", &admin);
    assert_eq!(app.status, 200, "{app:?}");
    for shown in [
        "default/hello/web-0",
        "default/hello/web-1",
        "/hello",
        "2 of 2",
        "applied",
    ] {
        assert!(app.body.contains(shown), "{shown} not in {}", app.body);
    }

    // The app's activity chart shows requests its replicas served.
    assert!(app.body.contains("Invocations a second"), "{}", app.body);
    for i in 0..30 {
        let r = shoal_tests::http_request(ingress, "GET", &format!("/hello/{i}"), LIMIT).unwrap();
        assert_eq!(r.status, 200, "{r:?}");
    }
    let shown = cluster
        .wait_until("the requests on the chart", LIMIT, |_| {
            let app = page(api, "/ui/apps/default/hello", &admin);
            let at = app.body.find("Invocations a second</strong>: latest ");
            let words = at.map(|at| app.body[at..].chars().take(80).collect::<String>());
            Ok(words.filter(|w| !w.contains("latest 0.0/s")))
        })
        .unwrap();
    println!("the chart says: {shown}");

    // The hosts page lists each host's replicas; a namespace's page its
    // quota, usage and apps.
    let hosts = page(api, "/ui/hosts", &admin);
    assert_eq!(hosts.status, 200, "{hosts:?}");
    for shown in ["Replicas on h1", "default/hello/web-0", "zone=a"] {
        assert!(hosts.body.contains(shown), "{shown} not in {}", hosts.body);
    }
    let namespace = page(api, "/ui/namespaces/default", &admin);
    assert_eq!(namespace.status, 200, "{namespace:?}");
    for shown in [
        "Quota and usage",
        "Replicas",
        "no limit",
        "/ui/apps/default/hello",
    ] {
        assert!(
            namespace.body.contains(shown),
            "{shown} not in {}",
            namespace.body
        );
    }
    let missing = page(api, "/ui/namespaces/nowhere", &admin);
    assert_eq!(missing.status, 404, "{missing:?}");

    // A viewer of one namespace sees its apps only, no hosts, and is
    // refused another namespace's app in the API's words.
    let viewer = cluster.token("reader", "view", Some("default")).unwrap();
    let reader = sign_in(api, &viewer);
    let overview = page(api, "/ui", &reader);
    assert_eq!(overview.status, 200, "{overview:?}");
    assert!(
        overview.body.contains("/ui/apps/default/hello"),
        "{}",
        overview.body
    );
    assert!(!overview.body.contains("secretive"), "{}", overview.body);
    assert!(
        !overview.body.contains("<h2 id=\"hosts\">"),
        "{}",
        overview.body
    );
    let refused = page(api, "/ui/apps/team-b/secretive", &reader);
    assert_eq!(refused.status, 403, "{refused:?}");
    assert!(refused.body.contains("reader"), "{}", refused.body);
    // Nor its logs, which the live view reads under /ui.
    let logs = page(api, "/ui/apps/team-b/secretive/logs", &reader);
    assert_eq!(logs.status, 403, "{logs:?}");
    // Nor the hosts page, nor another namespace's page, nor another
    // namespace's app's revisions; nor may it promote or abort there.
    for path in [
        "/ui/hosts",
        "/ui/namespaces/team-b",
        "/ui/apps/team-b/secretive/revisions",
    ] {
        let refused = page(api, path, &reader);
        assert_eq!(refused.status, 403, "{path}: {refused:?}");
    }
    for path in [
        "/ui/apps/team-b/secretive/promote",
        "/ui/apps/team-b/secretive/abort",
    ] {
        let refused = send_form(api, path, &reader, "same-origin", "");
        assert_eq!(refused.status, 403, "{path}: {refused:?}");
    }

    // The cookie reads pages and nothing else: the JSON API and any
    // change want the token itself.
    let api_call = call(api, "GET", "/v1/apps", &[("Cookie", &admin)], b"");
    assert_eq!(api_call.status, 401, "{api_call:?}");
    let change = call(
        api,
        "POST",
        "/v1/apps/default/hello/scale",
        &[("Cookie", &admin), ("Content-Type", "application/json")],
        b"{\"component\": \"web\", \"replicas\": 3}",
    );
    assert_eq!(change.status, 401, "{change:?}");

    // The admin scales from the page's form, sent from the page itself.
    assert!(app.body.contains("Replicas of web"), "{}", app.body);
    assert!(app.body.contains("Undo the last rollout"), "{}", app.body);
    let scale = "/ui/apps/default/hello/scale";
    let scaled = send_form(
        api,
        scale,
        &admin,
        "same-origin",
        "component=web&replicas=3",
    );
    assert_eq!(scaled.status, 303, "{scaled:?}");
    assert_eq!(scaled.header("location"), Some("/ui/apps/default/hello"));
    cluster
        .wait_until("the third replica shows", LIMIT, |_| {
            let app = page(api, "/ui/apps/default/hello", &admin);
            Ok(
                (app.body.contains("default/hello/web-2") && app.body.contains("3 of 3"))
                    .then_some(()),
            )
        })
        .unwrap();

    // The same form from another site carries the cookie in vain.
    let forged = send_form(api, scale, &admin, "cross-site", "component=web&replicas=9");
    assert_eq!(forged.status, 401, "{forged:?}");

    // A count over the bound is refused by the API's own check.
    let huge = send_form(
        api,
        scale,
        &admin,
        "same-origin",
        "component=web&replicas=10001",
    );
    assert_eq!(huge.status, 400, "{huge:?}");
    assert!(huge.body.contains("10000"), "{}", huge.body);

    // A viewer is offered no form, and a scale it forges is refused.
    let shown = page(api, "/ui/apps/default/hello", &reader);
    assert_eq!(shown.status, 200);
    assert!(!shown.body.contains("Scale"), "{}", shown.body);
    assert!(!shown.body.contains("Undo"), "{}", shown.body);
    let forged = send_form(
        api,
        scale,
        &reader,
        "same-origin",
        "component=web&replicas=1",
    );
    assert_eq!(forged.status, 403, "{forged:?}");
    assert!(forged.body.contains("scale"), "{}", forged.body);

    // A new version, then undo from the page: the earlier one is back.
    let v2 = cluster
        .spec(
            "hello.toml",
            "name = \"hello\"\n[components.web]\nsource = \"SOURCE(hello-http)\"\nkind = \"http\"\nroute = \"/hello\"\nreplicas = 3\nenv = { GREETING = \"v2\" }\n",
        )
        .unwrap();
    cluster.ok(&["apply", &v2, "--wait"]).unwrap();
    let undone = send_form(
        api,
        "/ui/apps/default/hello/undo",
        &admin,
        "same-origin",
        "",
    );
    assert_eq!(undone.status, 303, "{undone:?}");
    let app = page(api, "/ui/apps/default/hello", &admin);
    assert!(app.body.contains("rolled_back"), "{}", app.body);
    // What each revision changed, line by line: the undo took v2 away.
    let revisions = page(api, "/ui/apps/default/hello/revisions", &admin);
    assert_eq!(revisions.status, 200, "{revisions:?}");
    assert!(
        revisions
            .body
            .contains("<del>- GREETING = &quot;v2&quot;</del>")
            || revisions.body.contains("<del>- GREETING = \"v2\"</del>"),
        "{}",
        revisions.body
    );
    assert!(
        revisions.body.contains("Revisions kept"),
        "{}",
        revisions.body
    );
    let unknown = page(api, "/ui/apps/default/hello/revisions?to=999", &admin);
    assert_eq!(unknown.status, 400, "{unknown:?}");
    let detail = cluster
        .ok(&["describe", "app", "hello", "-o", "json"])
        .unwrap();
    assert!(!detail.contains("\"v2\""), "{detail}");

    // A canary shows its step and figures, with Promote and Abort for the
    // admin and neither for the viewer; Abort from the page ends it.
    let canary = cluster
        .spec(
            "hello.toml",
            "name = \"hello\"\n[components.web]\nsource = \"SOURCE(hello-http)\"\nkind = \"http\"\nroute = \"/hello\"\nreplicas = 3\nenv = { GREETING = \"v3\" }\nrollout = { strategy = \"canary\", steps = [\"20%\"], step_interval = \"1h\" }\n",
        )
        .unwrap();
    cluster.ok(&["apply", &canary]).unwrap();
    let app = cluster
        .wait_until("the canary on the page", LIMIT, |_| {
            let app = page(api, "/ui/apps/default/hello", &admin);
            Ok(app.body.contains("Canary at step 1 of 1").then_some(app))
        })
        .unwrap();
    for shown in ["20%", "This step", "Promote", "Abort"] {
        assert!(app.body.contains(shown), "{shown} not in {}", app.body);
    }
    let shown = page(api, "/ui/apps/default/hello", &reader);
    assert!(
        shown.body.contains("Canary at step 1 of 1"),
        "{}",
        shown.body
    );
    assert!(!shown.body.contains("Abort"), "{}", shown.body);
    let abort = "/ui/apps/default/hello/abort";
    let forged = send_form(api, abort, &reader, "same-origin", "");
    assert_eq!(forged.status, 403, "{forged:?}");
    let aborted = send_form(api, abort, &admin, "same-origin", "");
    assert_eq!(aborted.status, 303, "{aborted:?}");
    cluster
        .wait_until("the canary gone", LIMIT, |c| {
            let app = page(api, "/ui/apps/default/hello", &admin);
            let running = c.pods()?.iter().any(|p| p.id.is_canary());
            Ok((!app.body.contains("Canary at step") && !running).then_some(()))
        })
        .unwrap();

    // Signing out clears the cookie.
    let out = call(api, "POST", "/ui/sign-out", &[("Cookie", &admin)], b"");
    assert_eq!(out.status, 303);
    assert!(out.header("set-cookie").unwrap().contains("Max-Age=0"));
}
