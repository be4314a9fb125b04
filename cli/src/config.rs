//! The `shoal` command line's client config, the way kubeconfig is kubectl's:
//! named *contexts*, each an API address with an optional token, namespace
//! and CA certificate, and the `current-context` the verbs use unless told
//! otherwise.
//!
//! ```toml
//! current-context = "local"
//!
//! [contexts.local]
//! api = "https://127.0.0.1:7070"
//! token = "shoal_0123456789abcdef_..."   # optional
//! namespace = "team-a"                    # optional; default "default"
//! ca = "/path/to/ca.pem"                  # optional: trust this CA for an https api
//! ```
//!
//! The key types: [`ClientConfig`] (the file, [`ClientConfig::load`] and
//! [`ClientConfig::save`]), [`resolve`] (flags and environment over the
//! chosen context over defaults, into a [`Target`]), [`http_client`] (a
//! reqwest client that trusts the target's CA) and [`ConfigCommand`] (the
//! `shoal config …` verbs).
//!
//! The file may hold tokens, so it is treated like an ssh key: it is written
//! with mode 0600 through a temporary file renamed into place (never
//! world-readable, never half-written), and a config holding a token that
//! other users may read is refused. A token belongs to its context's API:
//! when `--api` points elsewhere, that token is not sent.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt;
use std::fs::{DirBuilder, File, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, anyhow, bail};
use clap::parser::ValueSource;
use clap::{ArgMatches, Args, FromArgMatches, Subcommand};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use serde::{Deserialize, Serialize};
use shoal_api::DEFAULT_NAMESPACE;

use crate::tunables::CLIENT_FILE_MAX_BYTES;

/// The API the verbs talk to when neither a flag nor a context names one.
pub const DEFAULT_API: &str = "http://127.0.0.1:7070";

/// The client config file: its contexts and which one is current.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct ClientConfig {
    /// The context used when `--context`/`SHOAL_CONTEXT` names none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_context: Option<String>,
    /// The contexts, by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub contexts: BTreeMap<String, ContextEntry>,
}

/// One context: a scheduler API and how to talk to it. Its `Debug` hides
/// the token.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct ContextEntry {
    /// The scheduler API, like `https://127.0.0.1:7070`.
    pub api: String,
    /// The bearer token sent to `api`, and only to `api`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// The namespace the verbs work in [default: `default`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// A CA certificate (PEM) to trust for an https `api`, instead of the
    /// built-in roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<PathBuf>,
}

impl fmt::Debug for ContextEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ContextEntry")
            .field("api", &self.api)
            .field("token", &redacted(&self.token))
            .field("namespace", &self.namespace)
            .field("ca", &self.ca)
            .finish()
    }
}

/// What a token looks like in `Debug` output.
fn redacted(token: &Option<String>) -> Option<&'static str> {
    token.as_ref().map(|_| "<redacted>")
}

impl ClientConfig {
    /// Reads the config at `path`. A missing file is an empty config; a
    /// malformed one, or one that holds a token and that other users may
    /// read (like ssh refuses such a key), is an error naming the file.
    pub fn load(path: &Path) -> anyhow::Result<ClientConfig> {
        let file = match File::open(path) {
            Ok(file) => file,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(ClientConfig::default()),
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("cannot open the shoal config {}", path.display()));
            }
        };
        // The mode of the file actually opened, not of whatever the path
        // names a moment later.
        let mode = file
            .metadata()
            .with_context(|| format!("cannot read the shoal config {}", path.display()))?
            .permissions()
            .mode();
        let what = format!("the shoal config {}", path.display());
        let bytes = read_capped(file, &what)?;
        let text = String::from_utf8(bytes).map_err(|_| anyhow!("{what} is not UTF-8 text"))?;
        let config: ClientConfig = toml::from_str(&text)
            .map_err(|e| anyhow!("{what} is not a valid shoal config: {e}"))?;
        if mode & 0o077 != 0 && config.contexts.values().any(|c| c.token.is_some()) {
            bail!(
                "{what} holds a token but other users may read it (mode {:03o}): \
                 run `chmod 600 {}`",
                mode & 0o777,
                path.display()
            );
        }
        Ok(config)
    }

    /// Writes the config to `path`, creating its directory (mode 0700) if
    /// needed. It goes to a temporary file created with mode 0600 beside
    /// `path`, is synced, then renamed over `path`: a crash leaves either
    /// the old config or the new one, and the token is never readable by
    /// others, not even for an instant.
    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        let text = toml::to_string_pretty(self)
            .with_context(|| format!("cannot write the shoal config {}", path.display()))?;
        let dir = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("cannot create the directory {}", dir.display()))?;
        write_private(path, text.as_bytes())
            .with_context(|| format!("cannot write the shoal config {}", path.display()))
    }

    /// Adds the context `name`, or replaces it, and makes it the current
    /// one if `make_current`.
    pub fn set_context(&mut self, name: &str, entry: ContextEntry, make_current: bool) {
        self.contexts.insert(name.to_string(), entry);
        if make_current {
            self.current_context = Some(name.to_string());
        }
    }

    /// Makes `name` the current context; an error listing the known ones
    /// if there is no such context.
    pub fn use_context(&mut self, name: &str) -> anyhow::Result<()> {
        if !self.contexts.contains_key(name) {
            return Err(self.unknown_context(name));
        }
        self.current_context = Some(name.to_string());
        Ok(())
    }

    /// Removes the context `name`, and clears `current-context` if it named
    /// it. Returns whether it was the current context.
    pub fn delete_context(&mut self, name: &str) -> anyhow::Result<bool> {
        if self.contexts.remove(name).is_none() {
            return Err(self.unknown_context(name));
        }
        let was_current = self.current_context.as_deref() == Some(name);
        if was_current {
            self.current_context = None;
        }
        Ok(was_current)
    }

    /// "no context named …", with what there is instead.
    fn unknown_context(&self, name: &str) -> anyhow::Error {
        if self.contexts.is_empty() {
            anyhow!(
                "no context named {name:?}: there are no contexts yet; \
                 add one with `shoal config set-context {name} --api URL`"
            )
        } else {
            anyhow!(
                "no context named {name:?}; known contexts: {}",
                self.known_contexts()
            )
        }
    }

    /// The contexts' names, comma-separated.
    fn known_contexts(&self) -> String {
        self.contexts
            .keys()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The client config file's path: `$SHOAL_CONFIG` if set and not empty,
/// else `$XDG_CONFIG_HOME/shoal/config.toml`, else
/// `$HOME/.config/shoal/config.toml`.
pub fn default_path() -> anyhow::Result<PathBuf> {
    let var = |name: &str| std::env::var_os(name);
    path_from(var("SHOAL_CONFIG"), var("XDG_CONFIG_HOME"), var("HOME"))
}

/// [`default_path`] from the given variables' values, for tests. Empty
/// values count as unset, and so does a relative `XDG_CONFIG_HOME` (the
/// XDG spec says to ignore it).
fn path_from(
    shoal_config: Option<OsString>,
    xdg_config_home: Option<OsString>,
    home: Option<OsString>,
) -> anyhow::Result<PathBuf> {
    let set = |value: Option<OsString>| value.filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(path) = set(shoal_config) {
        return Ok(path);
    }
    if let Some(dir) = set(xdg_config_home).filter(|dir| dir.is_absolute()) {
        return Ok(dir.join("shoal").join("config.toml"));
    }
    if let Some(home) = set(home) {
        return Ok(home.join(".config").join("shoal").join("config.toml"));
    }
    bail!(
        "cannot tell where the shoal config is: none of SHOAL_CONFIG, XDG_CONFIG_HOME \
         or HOME is set; set SHOAL_CONFIG to its path (or pass --config FILE)"
    )
}

/// What the flags and the environment asked for; `None` (or an empty
/// string) means not given. The caller fills it from `--api`/`SHOAL_API`,
/// `SHOAL_TOKEN`, `--context`/`SHOAL_CONTEXT`, `-n` and
/// `--api-ca`/`SHOAL_API_CA`.
#[derive(Clone, Default)]
pub struct Choice {
    /// The API to talk to.
    pub api: Option<String>,
    /// The token to send to it.
    pub token: Option<String>,
    /// The context to use instead of `current-context`.
    pub context: Option<String>,
    /// The namespace to work in.
    pub namespace: Option<String>,
    /// The CA certificate (PEM) to trust.
    pub ca: Option<PathBuf>,
}

impl fmt::Debug for Choice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Choice")
            .field("api", &self.api)
            .field("token", &redacted(&self.token))
            .field("context", &self.context)
            .field("namespace", &self.namespace)
            .field("ca", &self.ca)
            .finish()
    }
}

/// Where the verbs go and how: the outcome of [`resolve`].
#[derive(Clone, PartialEq, Eq)]
pub struct Target {
    /// The scheduler API.
    pub api: String,
    /// The bearer token to send to `api`, if any.
    pub token: Option<String>,
    /// The namespace to work in.
    pub namespace: String,
    /// The CA certificate (PEM) to trust for an https `api`.
    pub ca: Option<PathBuf>,
    /// The context used, if any.
    pub context: Option<String>,
}

impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Target")
            .field("api", &self.api)
            .field("token", &redacted(&self.token))
            .field("namespace", &self.namespace)
            .field("ca", &self.ca)
            .field("context", &self.context)
            .finish()
    }
}

/// Picks the API, token, namespace and CA: what `choice` gives, else the
/// chosen context's (`choice.context`, else `current-context`), else the
/// defaults ([`DEFAULT_API`], [`DEFAULT_NAMESPACE`], no token, the
/// built-in roots). A context that does not exist is an error listing the
/// known ones.
///
/// A context's token and CA belong to its API. When `choice.api` is
/// another API, they are left out: the token comes only from
/// `choice.token`, so a token for one cluster never reaches another.
pub fn resolve(config: &ClientConfig, choice: &Choice) -> anyhow::Result<Target> {
    let given = |value: &Option<String>| value.clone().filter(|v| !v.is_empty());
    let (name, entry) = match given(&choice.context) {
        Some(name) => {
            let entry = config
                .contexts
                .get(&name)
                .ok_or_else(|| config.unknown_context(&name))?;
            (Some(name), Some(entry))
        }
        None => match config.current_context.as_ref().filter(|n| !n.is_empty()) {
            Some(name) => {
                let entry = config.contexts.get(name).ok_or_else(|| {
                    anyhow!(
                        "the current context {name:?} does not exist: pick one with \
                         `shoal config use-context NAME`{}",
                        if config.contexts.is_empty() {
                            String::new()
                        } else {
                            format!(" (known contexts: {})", config.known_contexts())
                        }
                    )
                })?;
                (Some(name.clone()), Some(entry))
            }
            None => (None, None),
        },
    };
    let api = given(&choice.api);
    // The context's own API, or the same one given again: its token and CA apply.
    let own = entry.filter(|entry| api.as_deref().is_none_or(|api| same_api(api, &entry.api)));
    let token = given(&choice.token).or_else(|| own.and_then(|entry| entry.token.clone()));
    if let (Some(entry), None, None) = (entry, own, &token)
        && entry.token.is_some()
    {
        tracing::warn!(
            "not sending context {:?}'s token to {}, which is not its API ({}); \
             set SHOAL_TOKEN for that API",
            name.as_deref().unwrap_or_default(),
            api.as_deref().unwrap_or_default(),
            entry.api
        );
    }
    Ok(Target {
        api: api
            .or_else(|| entry.map(|entry| entry.api.clone()))
            .unwrap_or_else(|| DEFAULT_API.to_string()),
        token,
        namespace: given(&choice.namespace)
            .or_else(|| entry.and_then(|entry| entry.namespace.clone()))
            .unwrap_or_else(|| DEFAULT_NAMESPACE.to_string()),
        ca: choice
            .ca
            .clone()
            .or_else(|| own.and_then(|entry| entry.ca.clone())),
        context: name,
    })
}

/// Whether two API addresses are the same server: equal once parsed (so
/// `HTTPS://Host:443/` is `https://host`), or, if either is not a URL,
/// equal as text. Any doubt counts as different, which only withholds a
/// token.
fn same_api(a: &str, b: &str) -> bool {
    match (reqwest::Url::parse(a), reqwest::Url::parse(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

/// A reqwest client for `target`: over https it trusts only `target.ca`
/// when set, else the built-in webpki roots. TLS is rustls with the ring
/// provider, configured here rather than by reqwest (whose own default
/// would need aws-lc-rs).
pub fn http_client(target: &Target) -> anyhow::Result<reqwest::Client> {
    let roots = match &target.ca {
        Some(path) => ca_roots(path)?,
        None => rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        },
    };
    let mut tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .context("cannot set up TLS with the ring provider")?
    .with_root_certificates(roots)
    .with_no_client_auth();
    // reqwest speaks HTTP/1.1 only here (no `http2` feature): say so.
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .build()
        .context("cannot build the HTTP client")
}

/// The certificates of the PEM file at `path`, as trust roots.
fn ca_roots(path: &Path) -> anyhow::Result<rustls::RootCertStore> {
    let what = format!("the CA file {}", path.display());
    let file = File::open(path).with_context(|| format!("cannot open {what}"))?;
    let pem = read_capped(file, &what)?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| anyhow!("{what} is not valid PEM: {e}"))?;
        roots
            .add(cert)
            .map_err(|e| anyhow!("{what} holds a certificate that cannot be used: {e}"))?;
    }
    if roots.is_empty() {
        bail!("{what} holds no certificate: expected PEM (`-----BEGIN CERTIFICATE-----`)");
    }
    Ok(roots)
}

/// All of `reader`, refusing more than [`CLIENT_FILE_MAX_BYTES`].
fn read_capped(reader: impl Read, what: &str) -> anyhow::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    reader
        .take(CLIENT_FILE_MAX_BYTES.saturating_add(1))
        .read_to_end(&mut bytes)
        .with_context(|| format!("cannot read {what}"))?;
    if u64::try_from(bytes.len()).unwrap_or(u64::MAX) > CLIENT_FILE_MAX_BYTES {
        bail!("{what} is larger than {CLIENT_FILE_MAX_BYTES} bytes: is it the right file?");
    }
    Ok(bytes)
}

/// `shoal config …`: the client config's contexts.
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// List the contexts; `*` marks the current one.
    GetContexts {
        #[command(flatten)]
        file: ConfigFile,
    },
    /// Print the current context's name.
    CurrentContext {
        #[command(flatten)]
        file: ConfigFile,
    },
    /// Make a context the current one.
    UseContext {
        /// The context.
        name: String,
        #[command(flatten)]
        file: ConfigFile,
    },
    /// Create a context, or change the given fields of one.
    SetContext(SetContext),
    /// Delete a context.
    DeleteContext {
        /// The context.
        name: String,
        #[command(flatten)]
        file: ConfigFile,
    },
}

/// Which client config file a `shoal config` verb works on.
#[derive(Debug, Args)]
pub struct ConfigFile {
    /// The client config file [default: $SHOAL_CONFIG, else
    /// $XDG_CONFIG_HOME/shoal/config.toml, else ~/.config/shoal/config.toml].
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

impl ConfigFile {
    /// The file: `--config`, else [`default_path`].
    pub fn path(&self) -> anyhow::Result<PathBuf> {
        self.config.clone().map_or_else(default_path, Ok)
    }
}

/// `shoal config set-context`'s flags. The token is never a plain argument,
/// where it would land in the shell's history and in `ps`: it comes from a
/// file or from stdin.
#[derive(Debug, Args)]
pub struct SetContextArgs {
    /// The context.
    pub name: String,
    /// The scheduler API, like https://shoal.example:7070 (required for a
    /// new context).
    #[arg(long, value_name = "URL")]
    pub api: Option<String>,
    /// Read the token from this file (one trailing newline is dropped).
    #[arg(long, value_name = "FILE", conflicts_with = "token_stdin")]
    pub token_file: Option<PathBuf>,
    /// Read the token from stdin (one trailing newline is dropped).
    #[arg(long)]
    pub token_stdin: bool,
    /// The namespace the verbs work in.
    #[arg(long, short = 'n', value_name = "NS")]
    pub namespace: Option<String>,
    /// A CA certificate (PEM) to trust for an https API.
    #[arg(long, value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// Also make it the current context.
    #[arg(long = "use")]
    pub make_current: bool,
    #[command(flatten)]
    pub file: ConfigFile,
}

/// [`SetContextArgs`] taking only what was typed on the command line.
///
/// Why: `shoal` has a global `--api` (with `SHOAL_API` and a default), and
/// clap hands a global's value, even one from the environment or a
/// default, to a subcommand's argument of the same name. Without this,
/// `set-context prod --namespace x` with `SHOAL_API` set would quietly
/// rewrite prod's API. The same holds for `--namespace` and `--ca`,
/// should they become global.
#[derive(Debug)]
pub struct SetContext(pub SetContextArgs);

/// The `set-context` arguments that take only typed values.
const TYPED_ONLY: [&str; 3] = ["api", "namespace", "ca"];

impl FromArgMatches for SetContext {
    fn from_arg_matches(matches: &ArgMatches) -> Result<Self, clap::Error> {
        Self::from_arg_matches_mut(&mut matches.clone())
    }

    fn from_arg_matches_mut(matches: &mut ArgMatches) -> Result<Self, clap::Error> {
        for id in TYPED_ONLY {
            if matches.value_source(id) != Some(ValueSource::CommandLine) {
                matches
                    .try_clear_id(id)
                    .map_err(|e| clap::Error::raw(clap::error::ErrorKind::InvalidValue, e))?;
            }
        }
        SetContextArgs::from_arg_matches_mut(matches).map(SetContext)
    }

    fn update_from_arg_matches(&mut self, matches: &ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(matches)?;
        Ok(())
    }
}

impl Args for SetContext {
    fn augment_args(cmd: clap::Command) -> clap::Command {
        SetContextArgs::augment_args(cmd)
    }

    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        SetContextArgs::augment_args_for_update(cmd)
    }
}

/// Runs `shoal config …`.
pub fn run(command: ConfigCommand) -> anyhow::Result<()> {
    run_with(
        command,
        &mut std::io::stdin().lock(),
        &mut std::io::stdout().lock(),
    )
}

/// [`run`], reading a token from `stdin` and printing to `out`.
fn run_with(
    command: ConfigCommand,
    stdin: &mut dyn Read,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    match command {
        ConfigCommand::GetContexts { file } => {
            let path = file.path()?;
            let config = ClientConfig::load(&path)?;
            if config.contexts.is_empty() {
                eprintln!(
                    "no contexts in {}: add one with `shoal config set-context NAME --api URL`",
                    path.display()
                );
            } else {
                writeln!(out, "{}", contexts_table(&config))?;
            }
        }
        ConfigCommand::CurrentContext { file } => {
            let path = file.path()?;
            let config = ClientConfig::load(&path)?;
            match config.current_context {
                Some(name) => writeln!(out, "{name}")?,
                None => bail!(
                    "{} sets no current context: pick one with `shoal config use-context NAME`",
                    path.display()
                ),
            }
        }
        ConfigCommand::UseContext { name, file } => {
            let path = file.path()?;
            let mut config = ClientConfig::load(&path)?;
            config.use_context(&name)?;
            config.save(&path)?;
            writeln!(out, "switched to context {name:?}")?;
        }
        ConfigCommand::SetContext(SetContext(args)) => set_context(args, stdin, out)?,
        ConfigCommand::DeleteContext { name, file } => {
            let path = file.path()?;
            let mut config = ClientConfig::load(&path)?;
            let was_current = config.delete_context(&name)?;
            config.save(&path)?;
            writeln!(out, "deleted context {name:?} from {}", path.display())?;
            if was_current {
                eprintln!(
                    "it was the current context: pick another with `shoal config use-context NAME`"
                );
            }
        }
    }
    Ok(())
}

/// `shoal config set-context`.
fn set_context(
    args: SetContextArgs,
    stdin: &mut dyn Read,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let path = args.file.path()?;
    let mut config = ClientConfig::load(&path)?;
    let name = args.name;
    if name.is_empty() {
        bail!("a context needs a name");
    }
    let token = match (&args.token_file, args.token_stdin) {
        (Some(file), _) => {
            let what = format!("the token file {}", file.display());
            let reader = File::open(file).with_context(|| format!("cannot open {what}"))?;
            Some(read_token(reader, &what)?)
        }
        (None, true) => Some(read_token(stdin, "stdin")?),
        (None, false) => None,
    };
    let api = args.api.as_deref().map(checked_api).transpose()?;
    let namespace = args
        .namespace
        .map(|ns| shoal_api::Name::new(ns).map(|ns| ns.to_string()))
        .transpose()
        .context("--namespace")?;
    let ca = match args.ca {
        Some(ca) => {
            // Stored absolute, so the context works from any directory; read
            // now, so a wrong file fails here rather than at the next verb.
            let ca = std::path::absolute(&ca)
                .with_context(|| format!("cannot find the CA file {}", ca.display()))?;
            ca_roots(&ca)?;
            Some(ca)
        }
        None => None,
    };
    let created = !config.contexts.contains_key(&name);
    let entry = match config.contexts.get(&name).cloned() {
        Some(mut entry) => {
            if let Some(api) = api {
                if !same_api(&api, &entry.api) && token.is_none() && entry.token.take().is_some() {
                    eprintln!(
                        "dropped context {name:?}'s token, which is for its previous API {}: \
                         give the new API's with --token-file or --token-stdin",
                        entry.api
                    );
                }
                entry.api = api;
            }
            if token.is_some() {
                entry.token = token;
            }
            if namespace.is_some() {
                entry.namespace = namespace;
            }
            if ca.is_some() {
                entry.ca = ca;
            }
            entry
        }
        None => ContextEntry {
            api: api.ok_or_else(|| {
                anyhow!("there is no context {name:?} yet: give its API with --api URL")
            })?,
            token,
            namespace,
            ca,
        },
    };
    if entry.token.is_some() && sends_in_clear(&entry.api) {
        eprintln!(
            "warning: context {name:?}'s token will cross the network in clear text to {}: \
             use https",
            entry.api
        );
    }
    config.set_context(&name, entry, args.make_current);
    config.save(&path)?;
    let done = if created { "created" } else { "modified" };
    writeln!(out, "context {name:?} {done} in {}", path.display())?;
    if args.make_current {
        writeln!(out, "switched to context {name:?}")?;
    }
    Ok(())
}

/// `api` if it is an http or https URL without credentials in it.
fn checked_api(api: &str) -> anyhow::Result<String> {
    let url = reqwest::Url::parse(api)
        .with_context(|| format!("--api {api:?} is not a URL (like https://shoal.example:7070)"))?;
    if !matches!(url.scheme(), "http" | "https") {
        bail!("--api {api:?} must start with http:// or https://");
    }
    if !url.username().is_empty() || url.password().is_some() {
        bail!("--api must not hold credentials: give a token with --token-file or --token-stdin");
    }
    Ok(api.to_string())
}

/// Whether `api` is plain http to another machine.
fn sends_in_clear(api: &str) -> bool {
    let Ok(url) = reqwest::Url::parse(api) else {
        return false;
    };
    let host = url.host_str().unwrap_or_default();
    let loopback = host == "localhost"
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    url.scheme() == "http" && !loopback
}

/// The token in `reader`: its text less one trailing newline, which must
/// leave one non-empty line. The token never appears in an error.
fn read_token(reader: impl Read, what: &str) -> anyhow::Result<String> {
    let bytes = read_capped(reader, what)?;
    let text = String::from_utf8(bytes).map_err(|_| anyhow!("the token in {what} is not UTF-8"))?;
    let token = match text.strip_suffix('\n') {
        Some(line) => line.strip_suffix('\r').unwrap_or(line),
        None => &text,
    };
    if token.is_empty() {
        bail!("{what} holds no token");
    }
    if token.chars().any(|c| c.is_whitespace() || c.is_control()) {
        bail!(
            "the token in {what} holds spaces, control characters or several lines: expected the token alone"
        );
    }
    Ok(token.to_string())
}

/// `get-contexts`: aligned columns without borders, like `get`'s tables.
fn contexts_table(config: &ClientConfig) -> String {
    let rows = config
        .contexts
        .iter()
        .map(|(name, entry)| {
            let current = config.current_context.as_deref() == Some(name);
            vec![
                if current { "*" } else { "" }.to_string(),
                name.clone(),
                entry.api.clone(),
                entry
                    .namespace
                    .clone()
                    .unwrap_or_else(|| DEFAULT_NAMESPACE.to_string()),
                if entry.token.is_some() {
                    "token"
                } else {
                    "none"
                }
                .to_string(),
            ]
        })
        .collect();
    crate::tables::render(&["CURRENT", "NAME", "API", "NAMESPACE", "AUTH"], &[], rows)
}

/// Writes `bytes` to `path` whole and readable by its owner only: to a
/// temporary file created with mode 0600 beside it, synced, then renamed
/// over `path`. A crash leaves the old file or the new one, and the bytes
/// are never readable by others, not even for an instant.
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::new(ErrorKind::InvalidInput, "the path names no file"))?;
    let mut temp_name = OsString::from(".");
    temp_name.push(name);
    temp_name.push(format!(".{}.tmp", std::process::id()));
    let temp = dir.join(temp_name);
    // Left over by a crash of an earlier process with the same id.
    match std::fs::remove_file(&temp) {
        Err(e) if e.kind() != ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let written = (|| -> std::io::Result<()> {
        // create_new: never follow a symlink planted at the temporary name.
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&temp, path)
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&temp);
        return Err(e);
    }
    // Make the rename itself durable. Some file systems cannot sync a
    // directory; the file is written either way, so this is best effort.
    if let Ok(dir) = File::open(dir) {
        let _ = dir.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;
    use std::time::Duration;

    use clap::{CommandFactory, Parser};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    fn entry(api: &str, token: Option<&str>, namespace: Option<&str>) -> ContextEntry {
        ContextEntry {
            api: api.into(),
            token: token.map(Into::into),
            namespace: namespace.map(Into::into),
            ca: None,
        }
    }

    /// Two contexts, `local` (current, with a token) and `prod`.
    fn two_contexts() -> ClientConfig {
        let mut config = ClientConfig::default();
        config.set_context(
            "local",
            entry(
                "https://127.0.0.1:7070",
                Some("local-token"),
                Some("team-a"),
            ),
            true,
        );
        config.set_context(
            "prod",
            entry("https://shoal.example", Some("prod-token"), None),
            false,
        );
        config
    }

    fn mode(path: &Path) -> anyhow::Result<u32> {
        Ok(std::fs::metadata(path)?.permissions().mode() & 0o777)
    }

    #[test]
    fn a_missing_config_is_empty() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let config = ClientConfig::load(&dir.path().join("nope/config.toml"))?;
        assert_eq!(config, ClientConfig::default());
        Ok(())
    }

    #[test]
    fn a_saved_config_loads_back_and_is_0600_in_a_0700_directory() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("shoal/nested/config.toml");
        let mut config = two_contexts();
        config.contexts.insert(
            "with.dots and spaces".into(),
            ContextEntry {
                ca: Some("/etc/shoal/ca.pem".into()),
                ..entry("http://127.0.0.1:7070", None, None)
            },
        );
        config.save(&path)?;
        assert_eq!(ClientConfig::load(&path)?, config);
        assert_eq!(mode(&path)?, 0o600);
        assert_eq!(mode(&dir.path().join("shoal"))?, 0o700);
        assert_eq!(mode(&dir.path().join("shoal/nested"))?, 0o700);
        let text = std::fs::read_to_string(&path)?;
        assert!(text.starts_with("current-context = \"local\"\n"), "{text}");
        assert!(text.contains("[contexts.local]"), "{text}");

        // Saving again replaces it in place, leaving no temporary file.
        config.use_context("prod")?;
        config.save(&path)?;
        assert_eq!(
            ClientConfig::load(&path)?.current_context.as_deref(),
            Some("prod")
        );
        assert_eq!(mode(&path)?, 0o600);
        let files: Vec<_> = std::fs::read_dir(path.parent().unwrap_or(dir.path()))?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<Result<_, _>>()?;
        assert_eq!(files, vec![OsString::from("config.toml")]);

        // An existing directory keeps its mode.
        let open = dir.path().join("open");
        std::fs::create_dir(&open)?;
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o755))?;
        config.save(&open.join("config.toml"))?;
        assert_eq!(mode(&open)?, 0o755);
        Ok(())
    }

    #[test]
    fn an_empty_config_saves_to_an_empty_file_that_loads() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("config.toml");
        ClientConfig::default().save(&path)?;
        assert_eq!(ClientConfig::load(&path)?, ClientConfig::default());
        Ok(())
    }

    #[test]
    fn a_readable_config_with_a_token_is_refused_with_the_chmod_hint() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("config.toml");
        two_contexts().save(&path)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644))?;
        let err = format!("{:#}", ClientConfig::load(&path).err().context("loaded")?);
        assert!(
            err.contains(&format!("run `chmod 600 {}`", path.display())),
            "{err}"
        );
        assert!(err.contains("mode 644"), "{err}");
        assert!(!err.contains("local-token"), "{err}");

        // Without a token there is nothing to hide.
        let mut config = two_contexts();
        for entry in config.contexts.values_mut() {
            entry.token = None;
        }
        config.save(&path)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644))?;
        assert_eq!(ClientConfig::load(&path)?, config);
        Ok(())
    }

    #[test]
    fn unknown_keys_and_bad_toml_are_errors_naming_the_file_and_the_place() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("config.toml");
        for (text, wanted) in [
            ("current-context = \"a\"\nverbose = true\n", "verbose"),
            ("[contexts.a]\napi = \"http://x\"\ntokne = \"t\"\n", "tokne"),
            ("current_context = \"a\"\n", "current_context"),
            ("[contexts.a]\nnamespace = \"x\"\n", "missing field `api`"),
            ("current-context = \n", "line 1"),
        ] {
            std::fs::write(&path, text)?;
            let err = format!("{:#}", ClientConfig::load(&path).err().context(text)?);
            assert!(err.contains(&path.display().to_string()), "{err}");
            assert!(err.contains(wanted), "{text:?} gave: {err}");
        }
        std::fs::write(&path, [0xff, 0xfe])?;
        let err = format!(
            "{:#}",
            ClientConfig::load(&path).err().context("not UTF-8")?
        );
        assert!(err.contains("not UTF-8"), "{err}");
        Ok(())
    }

    #[test]
    fn an_oversized_file_is_refused() -> anyhow::Result<()> {
        let big = vec![b'#'; usize::try_from(CLIENT_FILE_MAX_BYTES)? + 1];
        let err = format!(
            "{:#}",
            read_capped(&big[..], "the file x").err().context("read")?
        );
        assert!(err.contains("the file x is larger than"), "{err}");
        assert_eq!(read_capped(&big[1..], "x")?.len(), big.len() - 1);
        Ok(())
    }

    #[test]
    fn the_default_path_follows_shoal_config_then_xdg_then_home() -> anyhow::Result<()> {
        let os = |s: &str| Some(OsString::from(s));
        assert_eq!(
            path_from(os("/a/c.toml"), os("/x"), os("/h"))?,
            PathBuf::from("/a/c.toml")
        );
        assert_eq!(
            path_from(os(""), os("/x"), os("/h"))?,
            PathBuf::from("/x/shoal/config.toml")
        );
        assert_eq!(
            path_from(None, os("relative"), os("/h"))?,
            PathBuf::from("/h/.config/shoal/config.toml")
        );
        assert_eq!(
            path_from(None, None, os("/h"))?,
            PathBuf::from("/h/.config/shoal/config.toml")
        );
        let err = path_from(None, os(""), None).err().context("no path")?;
        assert!(err.to_string().contains("set SHOAL_CONFIG"), "{err}");
        Ok(())
    }

    #[test]
    fn resolve_takes_flags_over_the_context_over_defaults() -> anyhow::Result<()> {
        // Nothing anywhere: the defaults.
        let target = resolve(&ClientConfig::default(), &Choice::default())?;
        assert_eq!(target.api, DEFAULT_API);
        assert_eq!(target.namespace, DEFAULT_NAMESPACE);
        assert_eq!(
            (target.token, target.ca, target.context),
            (None, None, None)
        );

        // The current context.
        let mut config = two_contexts();
        if let Some(local) = config.contexts.get_mut("local") {
            local.ca = Some("/ca.pem".into());
        }
        let target = resolve(&config, &Choice::default())?;
        assert_eq!(target.api, "https://127.0.0.1:7070");
        assert_eq!(target.token.as_deref(), Some("local-token"));
        assert_eq!(target.namespace, "team-a");
        assert_eq!(target.ca, Some(PathBuf::from("/ca.pem")));
        assert_eq!(target.context.as_deref(), Some("local"));

        // --context picks another; its missing namespace is the default.
        let prod = Choice {
            context: Some("prod".into()),
            ..Choice::default()
        };
        let target = resolve(&config, &prod)?;
        assert_eq!(target.api, "https://shoal.example");
        assert_eq!(target.token.as_deref(), Some("prod-token"));
        assert_eq!(target.namespace, DEFAULT_NAMESPACE);
        assert_eq!(target.context.as_deref(), Some("prod"));

        // Flags beat the context; empty strings count as not given.
        let target = resolve(
            &config,
            &Choice {
                token: Some("flag-token".into()),
                namespace: Some("team-b".into()),
                ca: Some("/other.pem".into()),
                api: Some(String::new()),
                ..Choice::default()
            },
        )?;
        assert_eq!(target.api, "https://127.0.0.1:7070");
        assert_eq!(target.token.as_deref(), Some("flag-token"));
        assert_eq!(target.namespace, "team-b");
        assert_eq!(target.ca, Some(PathBuf::from("/other.pem")));
        Ok(())
    }

    #[test]
    fn another_api_never_gets_the_contexts_token() -> anyhow::Result<()> {
        let mut config = two_contexts();
        if let Some(local) = config.contexts.get_mut("local") {
            local.ca = Some("/ca.pem".into());
        }
        let elsewhere = Choice {
            api: Some("https://evil.example".into()),
            ..Choice::default()
        };
        let target = resolve(&config, &elsewhere)?;
        assert_eq!(target.api, "https://evil.example");
        assert_eq!(target.token, None);
        assert_eq!(target.ca, None, "the context's CA is for its own API");
        assert_eq!(target.namespace, "team-a");

        // Unless the token is given for it.
        let target = resolve(
            &config,
            &Choice {
                token: Some("its-own".into()),
                ..elsewhere
            },
        )?;
        assert_eq!(target.token.as_deref(), Some("its-own"));

        // The same API written differently is still the context's.
        for same in ["https://127.0.0.1:7070/", "HTTPS://127.0.0.1:7070"] {
            let target = resolve(
                &config,
                &Choice {
                    api: Some(same.into()),
                    ..Choice::default()
                },
            )?;
            assert_eq!(target.token.as_deref(), Some("local-token"), "{same}");
        }
        // Another port or scheme is not.
        for other in ["https://127.0.0.1:7071", "http://127.0.0.1:7070"] {
            let target = resolve(
                &config,
                &Choice {
                    api: Some(other.into()),
                    ..Choice::default()
                },
            )?;
            assert_eq!(target.token, None, "{other}");
        }
        Ok(())
    }

    #[test]
    fn an_unknown_context_is_an_error_listing_the_known_ones() -> anyhow::Result<()> {
        let mut config = two_contexts();
        let choice = Choice {
            context: Some("staging".into()),
            ..Choice::default()
        };
        let err = resolve(&config, &choice)
            .err()
            .context("resolved")?
            .to_string();
        assert!(err.contains("\"staging\""), "{err}");
        assert!(err.contains("known contexts: local, prod"), "{err}");

        let err = config
            .use_context("staging")
            .err()
            .context("used")?
            .to_string();
        assert!(err.contains("known contexts: local, prod"), "{err}");
        let err = config
            .delete_context("staging")
            .err()
            .context("deleted")?
            .to_string();
        assert!(err.contains("known contexts: local, prod"), "{err}");

        let err = resolve(&ClientConfig::default(), &choice)
            .err()
            .context("resolved")?
            .to_string();
        assert!(err.contains("no contexts yet"), "{err}");

        // A current-context naming nothing (a hand edit) says how to fix it.
        config.current_context = Some("gone".into());
        let err = resolve(&config, &Choice::default())
            .err()
            .context("resolved")?
            .to_string();
        assert!(err.contains("use-context"), "{err}");
        assert!(err.contains("known contexts: local, prod"), "{err}");
        Ok(())
    }

    #[test]
    fn contexts_are_set_used_and_deleted() -> anyhow::Result<()> {
        let mut config = two_contexts();
        config.use_context("prod")?;
        assert_eq!(config.current_context.as_deref(), Some("prod"));
        config.set_context("new", entry("http://x", None, None), false);
        assert_eq!(config.current_context.as_deref(), Some("prod"));
        assert!(!config.delete_context("local")?);
        assert!(config.delete_context("prod")?);
        assert_eq!(config.current_context, None);
        assert_eq!(config.known_contexts(), "new");
        Ok(())
    }

    #[test]
    fn debug_output_hides_tokens() {
        let config = two_contexts();
        let target = Target {
            api: "a".into(),
            token: Some("target-token".into()),
            namespace: "n".into(),
            ca: None,
            context: None,
        };
        let choice = Choice {
            token: Some("choice-token".into()),
            ..Choice::default()
        };
        let text = format!("{config:?} {target:?} {choice:?}");
        for token in ["local-token", "prod-token", "target-token", "choice-token"] {
            assert!(!text.contains(token), "{text}");
        }
        assert!(text.contains("<redacted>"), "{text}");
    }

    #[test]
    fn a_token_loses_one_trailing_newline_and_nothing_else() -> anyhow::Result<()> {
        assert_eq!(read_token(&b"s3cr3t\n"[..], "f")?, "s3cr3t");
        assert_eq!(read_token(&b"s3cr3t\r\n"[..], "f")?, "s3cr3t");
        assert_eq!(read_token(&b"s3cr3t"[..], "f")?, "s3cr3t");
        for bad in [
            &b""[..],
            b"\n",
            b"s3cr3t\n\n",
            b"s3 cr3t",
            b"s3cr3t\nmore",
            b" s3cr3t",
        ] {
            let err = read_token(bad, "the file f").err().context("read")?;
            assert!(err.to_string().contains("the file f"), "{err}");
            assert!(!err.to_string().contains("s3"), "{err}");
        }
        Ok(())
    }

    #[test]
    fn plain_http_to_another_machine_is_in_clear() {
        assert!(sends_in_clear("http://shoal.example:7070"));
        assert!(!sends_in_clear("https://shoal.example:7070"));
        for local in [
            "http://localhost:7070",
            "http://127.0.0.1:7070",
            "http://[::1]:7070",
        ] {
            assert!(!sends_in_clear(local), "{local}");
        }
    }

    /// Today's `shoal` top level: a global `--api` with an environment
    /// variable and a default, and `config` among the commands.
    #[derive(Debug, Parser)]
    struct Shoal {
        #[arg(long, global = true, default_value = DEFAULT_API)]
        api: String,
        #[arg(long, short = 'n', global = true, default_value = DEFAULT_NAMESPACE)]
        namespace: String,
        #[command(subcommand)]
        command: Top,
    }

    #[derive(Debug, Subcommand)]
    enum Top {
        #[command(subcommand)]
        Config(ConfigCommand),
    }

    fn parse(args: &[&str]) -> anyhow::Result<ConfigCommand> {
        let Top::Config(command) =
            Shoal::try_parse_from(["shoal", "config"].iter().chain(args))?.command;
        Ok(command)
    }

    fn set_context_args(args: &[&str]) -> anyhow::Result<SetContextArgs> {
        match parse(args)? {
            ConfigCommand::SetContext(SetContext(args)) => Ok(args),
            other => bail!("parsed as {other:?}"),
        }
    }

    #[test]
    fn set_context_takes_only_typed_values_from_globals_of_the_same_name() -> anyhow::Result<()> {
        Shoal::command().debug_assert();
        let args = set_context_args(&["set-context", "prod"])?;
        assert_eq!(
            (args.api, args.namespace),
            (None, None),
            "defaults leaked in"
        );
        let args = set_context_args(&[
            "set-context",
            "prod",
            "--api",
            "https://x",
            "--namespace",
            "ns",
            "--ca",
            "/ca.pem",
            "--use",
            "--config",
            "/c.toml",
        ])?;
        assert_eq!(args.api.as_deref(), Some("https://x"));
        assert_eq!(args.namespace.as_deref(), Some("ns"));
        assert_eq!(args.ca, Some(PathBuf::from("/ca.pem")));
        assert!(args.make_current);
        assert_eq!(args.file.config, Some(PathBuf::from("/c.toml")));
        // No plain token argument, and one token source only.
        assert!(parse(&["set-context", "prod", "--token", "secret"]).is_err());
        assert!(parse(&["set-context", "prod", "--token-file", "f", "--token-stdin"]).is_err());
        Ok(())
    }

    /// The same against the real `shoal` top level, whose `--api` and
    /// `-n` are global and read SHOAL_API and SHOAL_NAMESPACE.
    #[test]
    fn set_context_parses_under_the_real_shoal_command() -> anyhow::Result<()> {
        crate::Cli::command().debug_assert();
        let parse = |args: &[&str]| -> anyhow::Result<SetContextArgs> {
            let cli = crate::Cli::try_parse_from(["shoal", "config"].iter().chain(args))?;
            match cli.command {
                crate::Command::Config(ConfigCommand::SetContext(SetContext(args))) => Ok(args),
                other => bail!("parsed as {other:?}"),
            }
        };
        let args = parse(&["set-context", "prod", "--api", "https://x", "-n", "ns"])?;
        assert_eq!(args.api.as_deref(), Some("https://x"));
        assert_eq!(args.namespace.as_deref(), Some("ns"));
        // Whatever SHOAL_API and SHOAL_NAMESPACE hold here, they are not typed.
        let args = parse(&["set-context", "prod"])?;
        assert_eq!((args.api, args.namespace), (None, None));
        Ok(())
    }

    /// Runs `shoal config ARGS --config PATH` with `stdin`; what it printed.
    fn shoal_config(path: &Path, args: &[&str], stdin: &str) -> anyhow::Result<String> {
        let config = path.to_string_lossy();
        let mut all = args.to_vec();
        all.extend(["--config", &config]);
        let mut out = Vec::new();
        run_with(parse(&all)?, &mut Cursor::new(stdin.as_bytes()), &mut out)?;
        Ok(String::from_utf8(out)?)
    }

    #[test]
    fn the_config_verbs_manage_contexts() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("shoal/config.toml");
        let token_file = dir.path().join("token");
        std::fs::write(&token_file, "file-token\n")?;

        let err = shoal_config(&path, &["set-context", "local"], "")
            .err()
            .context("created")?;
        assert!(err.to_string().contains("--api"), "{err}");
        let out = shoal_config(
            &path,
            &[
                "set-context",
                "local",
                "--api",
                "https://127.0.0.1:7070",
                "--token-stdin",
                "--use",
            ],
            "stdin-token\n",
        )?;
        assert!(out.contains("context \"local\" created"), "{out}");
        assert!(out.contains("switched to context \"local\""), "{out}");
        assert_eq!(mode(&path)?, 0o600);
        let token_arg = token_file.to_string_lossy();
        shoal_config(
            &path,
            &[
                "set-context",
                "prod",
                "--api",
                "https://shoal.example",
                "--token-file",
                &token_arg,
            ],
            "",
        )?;
        // Changing one field keeps the others.
        let out = shoal_config(
            &path,
            &["set-context", "local", "--namespace", "team-a"],
            "",
        )?;
        assert!(out.contains("modified"), "{out}");
        let config = ClientConfig::load(&path)?;
        assert_eq!(
            config.contexts.get("local"),
            Some(&entry(
                "https://127.0.0.1:7070",
                Some("stdin-token"),
                Some("team-a")
            ))
        );
        assert_eq!(
            config.contexts.get("prod"),
            Some(&entry("https://shoal.example", Some("file-token"), None))
        );

        let table = shoal_config(&path, &["get-contexts"], "")?;
        assert_eq!(
            table,
            "CURRENT  NAME   API                     NAMESPACE  AUTH\n\
             *        local  https://127.0.0.1:7070  team-a     token\n\
             \x20        prod   https://shoal.example   default    token\n"
        );
        assert_eq!(shoal_config(&path, &["current-context"], "")?, "local\n");
        shoal_config(&path, &["use-context", "prod"], "")?;
        assert_eq!(shoal_config(&path, &["current-context"], "")?, "prod\n");
        let err = shoal_config(&path, &["use-context", "nope"], "")
            .err()
            .context("used")?;
        assert!(
            err.to_string().contains("known contexts: local, prod"),
            "{err}"
        );

        // Moving a context to another API drops its token rather than
        // sending it there.
        shoal_config(
            &path,
            &["set-context", "prod", "--api", "https://new.example"],
            "",
        )?;
        let prod = ClientConfig::load(&path)?.contexts.remove("prod");
        assert_eq!(prod, Some(entry("https://new.example", None, None)));

        // Bad input is refused before anything is written.
        let before = std::fs::read_to_string(&path)?;
        for bad in [
            &["set-context", "x", "--api", "ftp://x"][..],
            &["set-context", "x", "--api", "https://user:pw@x"],
            &[
                "set-context",
                "x",
                "--api",
                "https://x",
                "--namespace",
                "Not A Name",
            ],
            &[
                "set-context",
                "x",
                "--api",
                "https://x",
                "--ca",
                "/no/such/ca.pem",
            ],
            &["set-context", "x", "--api", "https://x", "--token-stdin"],
        ] {
            assert!(shoal_config(&path, bad, "").is_err(), "{bad:?}");
        }
        assert_eq!(std::fs::read_to_string(&path)?, before);

        let out = shoal_config(&path, &["delete-context", "prod"], "")?;
        assert!(out.contains("deleted context \"prod\""), "{out}");
        let err = shoal_config(&path, &["current-context"], "")
            .err()
            .context("current")?;
        assert!(err.to_string().contains("use-context"), "{err}");
        shoal_config(&path, &["delete-context", "local"], "")?;
        assert_eq!(shoal_config(&path, &["get-contexts"], "")?, "");
        Ok(())
    }

    /// A CA and a certificate for 127.0.0.1 signed by it, as PEM.
    fn ca_and_server_cert() -> anyhow::Result<(String, rustls::ServerConfig)> {
        let ca_key = rcgen::KeyPair::generate()?;
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new())?;
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key)?;
        let key = rcgen::KeyPair::generate()?;
        let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])?
            .signed_by(&key, &ca, &ca_key)?;
        let server = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )?;
        Ok((ca.pem(), server))
    }

    /// An https server on 127.0.0.1 answering every request with "ok".
    async fn https_server(config: rustls::ServerConfig) -> anyhow::Result<String> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("https://{}/", listener.local_addr()?);
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let mut request = [0u8; 4096];
                    let _ = tls.read(&mut request).await;
                    let _ = tls
                        .write_all(
                            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
                        )
                        .await;
                    let _ = tls.shutdown().await;
                });
            }
        });
        Ok(url)
    }

    async fn get(target: &Target) -> anyhow::Result<String> {
        let request = http_client(target)?.get(&target.api).send();
        let response = tokio::time::timeout(Duration::from_secs(10), request).await??;
        Ok(response.error_for_status()?.text().await?)
    }

    #[tokio::test]
    async fn an_https_api_is_trusted_through_the_given_ca() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let (ca_pem, server) = ca_and_server_cert()?;
        let api = https_server(server).await?;
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, ca_pem)?;
        let target = |ca: Option<PathBuf>| Target {
            api: api.clone(),
            token: None,
            namespace: DEFAULT_NAMESPACE.into(),
            ca,
            context: None,
        };
        assert_eq!(get(&target(Some(ca.clone()))).await?, "ok");
        // The built-in roots do not know this CA, nor does another CA.
        assert!(get(&target(None)).await.is_err());
        let (other_ca, _) = ca_and_server_cert()?;
        let other = dir.path().join("other.pem");
        std::fs::write(&other, other_ca)?;
        assert!(get(&target(Some(other))).await.is_err());
        Ok(())
    }

    #[test]
    fn a_bad_ca_file_is_an_error_naming_it() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let missing = dir.path().join("missing.pem");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n")?;
        for (path, wanted) in [(missing, "cannot open"), (empty, "holds no certificate")] {
            let target = Target {
                api: "https://x".into(),
                token: None,
                namespace: DEFAULT_NAMESPACE.into(),
                ca: Some(path.clone()),
                context: None,
            };
            let err = format!("{:#}", http_client(&target).err().context("built")?);
            assert!(err.contains(&path.display().to_string()), "{err}");
            assert!(err.contains(wanted), "{err}");
        }
        Ok(())
    }
}
