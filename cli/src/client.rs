//! The scheduler API client the user verbs share.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, bail};
use serde::Serialize;
use serde::de::DeserializeOwned;
use shoal_api::resources::{ApiError, ApplyRequest, ApplyResponse};
use shoal_api::{AppSpec, Digest, Name};

use crate::config::{Target, http_client};

/// The API refused the caller (401 or 403): retrying will not help.
#[derive(Debug)]
pub struct Refused(pub String);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Refused {}

/// The API answered 409: what the call was based on changed meanwhile.
#[derive(Debug)]
pub struct Conflict(pub String);

impl std::fmt::Display for Conflict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Conflict {}

/// Talks to one scheduler.
pub struct Client {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
    namespace: String,
    namespace_given: bool,
}

impl Client {
    /// A client for `target`: its API, credential and namespace.
    pub fn new(target: &Target) -> anyhow::Result<Self> {
        Ok(Client {
            base: target.api.trim_end_matches('/').to_string(),
            token: target.token.clone(),
            http: http_client(target)?,
            namespace: target.namespace.clone(),
            namespace_given: false,
        })
    }

    /// Marks the namespace as given on the command line (not from the
    /// context): lists then show only that namespace.
    pub fn namespace_was_given(mut self, given: bool) -> Self {
        self.namespace_given = given;
        self
    }

    /// The namespace verbs act in: `-n`, else the context's, else `default`.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The namespace, if `-n` gave it.
    pub fn namespace_given(&self) -> Option<&str> {
        self.namespace_given.then_some(self.namespace.as_str())
    }

    /// The API's URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(token) = &self.token {
            req = req.bearer_auth(token);
        }
        req
    }

    async fn send<T: DeserializeOwned>(&self, req: reqwest::RequestBuilder) -> anyhow::Result<T> {
        let resp = self.checked(req).await?;
        resp.json().await.with_context(|| {
            format!(
                "the scheduler at {} answered something unreadable",
                self.base
            )
        })
    }

    async fn checked(&self, req: reqwest::RequestBuilder) -> anyhow::Result<reqwest::Response> {
        let resp = req.send().await.with_context(|| {
            format!(
                "cannot reach the scheduler at {}: is it running? (see `shoal config get-contexts`, or set --api)",
                self.base
            )
        })?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        let message = match serde_json::from_str::<ApiError>(&text) {
            Ok(e) => e.error,
            Err(_) => format!("the scheduler answered {status}: {text}"),
        };
        if matches!(status.as_u16(), 401 | 403) {
            return Err(Refused(message).into());
        }
        if status.as_u16() == 409 {
            return Err(Conflict(message).into());
        }
        bail!("{message}")
    }

    /// GET `path` as JSON.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        self.send(self.request(reqwest::Method::GET, path)).await
    }

    /// GET `path` as raw bytes.
    pub async fn get_bytes(&self, path: &str) -> anyhow::Result<Vec<u8>> {
        let resp = self
            .checked(self.request(reqwest::Method::GET, path))
            .await?;
        let bytes = resp
            .bytes()
            .await
            .with_context(|| format!("the download from {} broke off", self.base))?;
        Ok(bytes.to_vec())
    }

    /// POST `body` to `path`, JSON both ways.
    pub async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> anyhow::Result<T> {
        self.send(self.request(reqwest::Method::POST, path).json(body))
            .await
    }

    /// PUT raw bytes to `path`.
    pub async fn put_bytes(&self, path: &str, body: Vec<u8>) -> anyhow::Result<()> {
        self.checked(
            self.request(reqwest::Method::PUT, path)
                .header("content-type", "application/octet-stream")
                .body(body),
        )
        .await?;
        Ok(())
    }

    /// GET `path`, a stream of newline-delimited JSON, handing each line to
    /// `each` as it arrives; until the server ends it or `each` fails.
    pub async fn get_lines(
        &self,
        path: &str,
        mut each: impl FnMut(&str) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        let mut resp = self
            .checked(self.request(reqwest::Method::GET, path))
            .await?;
        let mut pending: Vec<u8> = Vec::new();
        while let Some(chunk) = resp
            .chunk()
            .await
            .with_context(|| format!("the stream from {} broke off", self.base))?
        {
            pending.extend_from_slice(&chunk);
            while let Some(end) = pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = pending.drain(..=end).collect();
                let text = String::from_utf8_lossy(&line[..line.len() - 1]).into_owned();
                if !text.is_empty() {
                    each(&text)?;
                }
            }
        }
        Ok(())
    }

    /// PUT `body` to `path`, JSON both ways.
    pub async fn put_json<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> anyhow::Result<T> {
        self.send(self.request(reqwest::Method::PUT, path).json(body))
            .await
    }

    /// DELETE `path`, reading a JSON answer.
    pub async fn delete_json<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        self.send(self.request(reqwest::Method::DELETE, path)).await
    }

    /// DELETE `path`.
    pub async fn delete(&self, path: &str) -> anyhow::Result<()> {
        self.checked(self.request(reqwest::Method::DELETE, path))
            .await?;
        Ok(())
    }

    /// Applies the spec in `file`: checks it here first (every problem, with
    /// lines), uploads each component's bytes, then asks the scheduler.
    pub async fn apply(&self, file: &Path, dry_run: bool) -> anyhow::Result<ApplyResponse> {
        let shown = file.display().to_string();
        let text = std::fs::read_to_string(file).with_context(|| format!("cannot read {shown}"))?;
        let spec = AppSpec::from_toml(&text, &shown)?;
        let base = file.parent().unwrap_or_else(|| Path::new("."));
        let mut digests: BTreeMap<Name, Digest> = BTreeMap::new();
        for (name, component) in &spec.components {
            let source = base.join(&component.source);
            let bytes = std::fs::read(&source).with_context(|| {
                format!(
                    "component {name}: cannot read its source {} (resolved from {shown})",
                    source.display()
                )
            })?;
            let digest = Digest::of(&bytes);
            self.checked(
                self.request(
                    reqwest::Method::PUT,
                    &format!("/v1/components/{}", digest.to_hex()),
                )
                .header("content-type", "application/wasm")
                .body(bytes),
            )
            .await
            .with_context(|| format!("component {name} ({})", source.display()))?;
            digests.insert(name.clone(), digest);
        }
        let request = ApplyRequest {
            file: shown,
            spec: text,
            digests,
            dry_run,
            if_revision: None,
        };
        // A concurrent change (another apply, a scale, through any
        // scheduler) makes the scheduler refuse this one. The spec is
        // unchanged, so it is sent once more against what is stored now;
        // a second conflict is the user's to look at.
        match self.post("/v1/apps", &request).await {
            Err(e) if e.downcast_ref::<Conflict>().is_some() => {
                self.post("/v1/apps", &request).await.map_err(|again| {
                    match again.downcast_ref::<Conflict>() {
                        Some(c) => anyhow::anyhow!(
                            "{c}\n(the app kept changing while this apply was retried: see `shoal describe app` and `shoal rollout history`, then apply again)"
                        ),
                        None => again,
                    }
                })
            }
            other => other,
        }
    }
}
