//! The dashboard in a real browser: Debian's Chromium, headless, driven
//! through ChromeDriver (WebDriver) against a real scheduler and host.
//! Signs in, opens an app, sees its replicas, scales it from 2 to 3 and
//! sees the third appear, undoes a rollout; a `view` token sees no form
//! and a scale it forges from the page is refused; every page passes
//! axe-core's checks of contrast and labels. Takes the screenshots the
//! README links: into `docs/screenshots/` with `SHOAL_SCREENSHOTS=1`, else
//! into the test's scratch directory (so that a test run leaves the tree
//! as it was).
//!
//! `scripts/setup` installs Chromium and ChromeDriver.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use shoal_tests::cluster::Cluster;
use shoal_tests::cluster::free_port;

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const LIMIT: Duration = Duration::from_secs(20);

/// ChromeDriver, stopped when dropped.
struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A headless Chromium under ChromeDriver, with the flags a closed
/// network wants (no background connections, no component updates).
async fn browser() -> (Driver, Client) {
    for needed in [CHROMIUM, CHROMEDRIVER] {
        assert!(
            std::path::Path::new(needed).exists(),
            "{needed} is missing: run scripts/setup (it installs Debian's chromium and chromium-driver)"
        );
    }
    let port = free_port().unwrap();
    let child = Command::new(CHROMEDRIVER)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let driver = Driver(child);
    let deadline = Instant::now() + LIMIT;
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "ChromeDriver did not listen");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "binary": CHROMIUM,
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--window-size=1280,900"
            ]
        }),
    );
    let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{port}"))
        .await
        .unwrap();
    (driver, client)
}

/// Waits until the page's source contains `text`, reloading it.
async fn until_shown(client: &Client, text: &str) -> String {
    let deadline = Instant::now() + LIMIT;
    loop {
        let source = client.source().await.unwrap();
        if source.contains(text) {
            return source;
        }
        assert!(Instant::now() < deadline, "{text:?} never showed: {source}");
        tokio::time::sleep(Duration::from_millis(300)).await;
        client.refresh().await.unwrap();
    }
}

/// Clicks the element `css` finds.
async fn click(client: &Client, css: &str) {
    client
        .find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
        .click()
        .await
        .unwrap();
}

async fn sign_in(client: &Client, base: &str, token: &str) {
    client.goto(&format!("{base}/ui")).await.unwrap();
    // Not signed in: the page sends the browser to the form.
    assert!(
        client
            .current_url()
            .await
            .unwrap()
            .path()
            .ends_with("/ui/sign-in")
    );
    client
        .find(Locator::Css("#token"))
        .await
        .unwrap()
        .send_keys(token)
        .await
        .unwrap();
    click(client, "main button[type=submit]").await;
    until_shown(client, "<h1>Overview</h1>").await;
}

/// Waits, without reloading, until the live log view shows `text`; the
/// view's text.
async fn wait_for_log(client: &Client, text: &str) -> String {
    let deadline = Instant::now() + LIMIT;
    loop {
        let shown = client
            .find(Locator::Css("#log"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if shown.contains(text) {
            return shown;
        }
        assert!(Instant::now() < deadline, "{text:?} never arrived: {shown}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Runs axe-core's checks of contrast and labels on the current page; the
/// rules that failed, with how many elements each.
async fn accessibility_violations(client: &Client) -> Vec<String> {
    let axe = include_str!("../assets/axe.min.js");
    client.execute(axe, Vec::new()).await.unwrap();
    let result = client
        .execute_async(
            r#"const done = arguments[arguments.length - 1];
               axe.run(document, { runOnly: { type: 'rule', values: [
                   'color-contrast', 'label', 'button-name', 'link-name',
                   'document-title', 'html-has-lang', 'page-has-heading-one'] } })
                 .then(r => done(r.violations.map(v => v.id + ' on ' + v.nodes.length + ' element(s)')))
                 .catch(e => done(['axe failed: ' + e]));"#,
            Vec::new(),
        )
        .await
        .unwrap();
    serde_json::from_value(result).unwrap()
}

async fn screenshot(client: &Client, cluster: &Cluster, name: &str) {
    let png = client.screenshot().await.unwrap();
    assert!(
        png.starts_with(b"\x89PNG"),
        "a screenshot that is not a PNG"
    );
    let dir = if std::env::var_os("SHOAL_SCREENSHOTS").is_some() {
        shoal_tests::repo_root().join("docs/screenshots")
    } else {
        cluster.dir().join("screenshots")
    };
    let path = dir.join(name);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, png).unwrap();
}

#[test]
fn in_a_real_browser_sign_in_see_scale_undo_and_a_viewer_gets_no_buttons() {
    let mut cluster = Cluster::start().unwrap();
    let ingress = cluster.start_host("h1", "zone=a").unwrap();
    let hello = |greeting: &str| {
        format!(
            "name = \"hello\"\n[components.web]\nsource = \"SOURCE(hello-http)\"\nkind = \"http\"\nroute = \"/hello\"\nreplicas = 2\nenv = {{ GREETING = \"{greeting}\" }}\n"
        )
    };
    let v1 = cluster.spec("hello.toml", &hello("v1")).unwrap();
    cluster.ok(&["apply", &v1, "--wait"]).unwrap();
    let admin = cluster.admin_token().unwrap();
    let viewer = cluster.token("reader", "view", Some("default")).unwrap();
    let base = format!("http://127.0.0.1:{}", cluster.scheduler_ports()[0]);

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let (_driver, client) = browser().await;

        // The sign-in form passes the checks before anything else.
        client.goto(&format!("{base}/ui/sign-in")).await.unwrap();
        let violations = accessibility_violations(&client).await;
        assert!(violations.is_empty(), "sign-in: {violations:?}");

        sign_in(&client, &base, &admin).await;
        let overview = until_shown(&client, "/ui/apps/default/hello").await;
        assert!(
            overview.contains("h1") && overview.contains("zone=a"),
            "{overview}"
        );
        let violations = accessibility_violations(&client).await;
        assert!(violations.is_empty(), "overview: {violations:?}");
        screenshot(&client, &cluster, "overview.png").await;

        // The hosts page and a namespace's page pass the same checks.
        click(&client, "a[href='/ui/hosts']").await;
        let hosts = until_shown(&client, "Replicas on h1").await;
        assert!(hosts.contains("default/hello/web-0"), "{hosts}");
        let violations = accessibility_violations(&client).await;
        assert!(violations.is_empty(), "hosts: {violations:?}");
        client
            .goto(&format!("{base}/ui/namespaces/default"))
            .await
            .unwrap();
        let namespace = until_shown(&client, "Quota and usage").await;
        assert!(namespace.contains("/ui/apps/default/hello"), "{namespace}");
        let violations = accessibility_violations(&client).await;
        assert!(violations.is_empty(), "namespace: {violations:?}");
        client.goto(&format!("{base}/ui")).await.unwrap();
        until_shown(&client, "/ui/apps/default/hello").await;

        // Some requests, for the activity chart.
        for i in 0..60 {
            let path = format!("/hello/{i}");
            let r = shoal_tests::http_request(ingress, "GET", &path, LIMIT).unwrap();
            assert_eq!(r.status, 200, "{r:?}");
        }
        // Open the app: its two replicas, on h1, and the requests served.
        click(&client, "a[href='/ui/apps/default/hello']").await;
        let app = until_shown(&client, "latest 2.0/s").await;
        assert!(
            app.contains("default/hello/web-1") && app.contains("2 of 2"),
            "{app}"
        );
        let violations = accessibility_violations(&client).await;
        assert!(violations.is_empty(), "app: {violations:?}");
        screenshot(&client, &cluster, "app.png").await;

        // Scale from 2 to 3 with the form, and see the third appear.
        let field = client.find(Locator::Css("#replicas-web")).await.unwrap();
        field.clear().await.unwrap();
        field.send_keys("3").await.unwrap();
        click(&client, "form[action$='/scale'] button").await;
        until_shown(&client, "default/hello/web-2").await;
        until_shown(&client, "3 of 3").await;

        // The replica table follows a change made elsewhere without a
        // reload: a fourth replica from the command line shows up.
        cluster.ok(&["scale", "hello/web", "4"]).unwrap();
        let deadline = Instant::now() + LIMIT;
        loop {
            let source = client.source().await.unwrap();
            if source.contains("default/hello/web-3") {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "web-3 never showed without a reload: {source}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }

        // A new version, then undo from the page: the earlier one is back.
        let v2 = cluster.spec("hello.toml", &hello("v2")).unwrap();
        cluster.ok(&["apply", &v2, "--wait"]).unwrap();
        client.refresh().await.unwrap();
        click(&client, "form[action$='/undo'] button").await;
        until_shown(&client, "rolled_back").await;
        let detail = cluster
            .ok(&["describe", "app", "hello", "-o", "json"])
            .unwrap();
        assert!(
            detail.contains("\"v1\"") && !detail.contains("\"v2\""),
            "{detail}"
        );
        // What the undo changed, from the app's page.
        click(&client, "a[href='/ui/apps/default/hello/revisions']").await;
        let diff = until_shown(&client, "Revisions kept").await;
        assert!(diff.contains("<del>"), "{diff}");
        let violations = accessibility_violations(&client).await;
        assert!(violations.is_empty(), "revisions: {violations:?}");

        // A worker's page follows its logs live: a line the component
        // prints on an invocation arrives without a reload, and the filter
        // hides what does not match.
        let echo = shoal_tests::repo_root().join("examples/echo-worker/app.toml");
        cluster
            .ok(&["apply", &echo.display().to_string(), "--wait"])
            .unwrap();
        client
            .goto(&format!("{base}/ui/apps/default/echo"))
            .await
            .unwrap();
        until_shown(&client, "Following:").await;
        cluster
            .ok(&["invoke", "echo/echo", "--data", "from-the-browser"])
            .unwrap();
        let live = wait_for_log(&client, "echoing 16 bytes").await;
        assert!(live.contains("echo"), "{live}");
        client
            .find(Locator::Css("#log-filter"))
            .await
            .unwrap()
            .send_keys("no line says this")
            .await
            .unwrap();
        let hidden = client
            .execute(
                "return [...document.querySelectorAll('#log div')].every(d => d.hidden)",
                Vec::new(),
            )
            .await
            .unwrap();
        assert_eq!(hidden, serde_json::json!(true));
        let violations = accessibility_violations(&client).await;
        assert!(violations.is_empty(), "logs: {violations:?}");

        // A viewer: no form, no button; a scale it forges from the page
        // itself is refused by the API's rules.
        click(&client, "header button[type=submit]").await;
        sign_in(&client, &base, &viewer).await;
        client
            .goto(&format!("{base}/ui/apps/default/hello"))
            .await
            .unwrap();
        let page = until_shown(&client, "default/hello/web-0").await;
        assert!(!page.contains("Scale") && !page.contains("Undo"), "{page}");
        assert!(
            client
                .find(Locator::Css("form[action$='/scale']"))
                .await
                .is_err()
        );
        let status = client
            .execute_async(
                r#"const done = arguments[arguments.length - 1];
                   fetch('/ui/apps/default/hello/scale', { method: 'POST',
                       headers: { 'Content-Type': 'application/x-www-form-urlencoded' },
                       body: 'component=web&replicas=1' })
                     .then(r => done(r.status)).catch(e => done(String(e)));"#,
                Vec::new(),
            )
            .await
            .unwrap();
        assert_eq!(status, serde_json::json!(403));
        client.close().await.unwrap();
    });
}
