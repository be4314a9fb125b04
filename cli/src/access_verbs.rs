//! The verbs about who may do what: `auth whoami|can-i|token`,
//! namespaces (`create|update namespace`, `get namespaces`,
//! `describe namespace`) and `audit`.

use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use shoal_api::access::{Binding, PrincipalKind, Resource, Verb};
use shoal_api::resources::{
    AuditRecord, CanI, CreateTokenRequest, CreatedToken, LogRetention, NamespaceInfo,
    NamespaceRequest, NamespaceSpec, Quota, RouteClaim, TokenInfo, WhoAmI,
};
use shoal_api::wire::now_ms;
use shoal_api::{ByteSize, DurationSpec, Name};

use crate::client::Client;
use crate::tables::{self, age, span};
use crate::verbs::Format;

/// `shoal auth …`.
#[derive(Debug, Subcommand)]
pub enum AuthVerb {
    /// Who the current credential names, and the roles it holds.
    Whoami {
        /// Output format.
        #[arg(short = 'o', long = "output", value_enum, default_value_t)]
        format: Format,
    },
    /// Whether the API would let you use VERB on RESOURCE (exit 0 yes, 1 no),
    /// and the rule that decided.
    CanI {
        /// get, list, watch, create, update, delete, invoke, scale,
        /// rollout, logs, secrets-set or secrets-list.
        verb: Verb,
        /// apps, pods, logs, events, secrets, hosts, namespaces, tokens or
        /// audit.
        resource: Resource,
        /// Ask cluster-wide rather than in the namespace.
        #[arg(long)]
        cluster: bool,
    },
    /// Make, list and revoke API tokens.
    #[command(subcommand)]
    Token(TokenVerb),
}

/// `shoal auth token …`.
#[derive(Debug, Subcommand)]
pub enum TokenVerb {
    /// Make a token for a principal and print it (shown only this once).
    Create {
        /// The principal it stands for: a person or a program.
        name: Name,
        /// The role it holds (repeatable): admin, edit, view, invoke, or a
        /// custom one.
        #[arg(long = "role", required = true)]
        roles: Vec<Name>,
        /// Bind the roles cluster-wide instead of in the namespace.
        #[arg(long)]
        cluster: bool,
        /// How long it lives (like 24h, 30d).
        #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
        ttl: Duration,
        /// It names a person (default: a program, a service account).
        #[arg(long)]
        user: bool,
        /// Print only the token, for scripts.
        #[arg(long)]
        quiet: bool,
    },
    /// List tokens (never their secrets).
    List {
        /// Output format.
        #[arg(short = 'o', long = "output", value_enum, default_value_t)]
        format: Format,
    },
    /// Revoke a token by its id; it stops working at once.
    Revoke {
        /// The token's id (see `shoal auth token list`).
        id: String,
    },
}

/// A namespace's settings, as `create namespace` and `update namespace`
/// take them.
#[derive(Debug, Args)]
pub struct NamespaceArgs {
    /// The namespace.
    name: Name,
    /// Replicas it may run, over all its apps.
    #[arg(long)]
    max_replicas: Option<u32>,
    /// Memory it may reserve (limits.memory × concurrency per replica).
    #[arg(long, value_parser = ByteSize::parse)]
    max_memory: Option<ByteSize>,
    /// Bytes of components its apps may use.
    #[arg(long, value_parser = ByteSize::parse)]
    max_component_bytes: Option<ByteSize>,
    /// Key-value and work-queue storage it may hold.
    #[arg(long, value_parser = ByteSize::parse)]
    max_storage: Option<ByteSize>,
    /// Secrets it may hold.
    #[arg(long)]
    max_secrets: Option<u32>,
    /// How long its logs are kept (default 7d).
    #[arg(long, value_parser = DurationSpec::parse)]
    log_max_age: Option<DurationSpec>,
    /// The most bytes of logs it keeps (default 256MiB); the oldest go first.
    #[arg(long, value_parser = ByteSize::parse)]
    log_max_bytes: Option<ByteSize>,
    /// A route only it may serve, as [HOST]/PREFIX (repeatable): like
    /// `shop.example.com/` or `/team-a`.
    #[arg(long = "claim-route", value_name = "[HOST]/PREFIX", value_parser = parse_claim)]
    claims: Vec<RouteClaim>,
    /// With `update namespace`: remove every limit not given here.
    #[arg(long)]
    replace: bool,
}

fn parse_claim(text: &str) -> Result<RouteClaim, String> {
    match text.find('/') {
        Some(0) => Ok(RouteClaim {
            host: None,
            prefix: text.to_string(),
        }),
        Some(i) => Ok(RouteClaim {
            host: Some(text[..i].to_ascii_lowercase()),
            prefix: text[i..].to_string(),
        }),
        None => Err(format!(
            "expected [HOST]/PREFIX, like shop.example.com/ or /team-a; got {text:?}"
        )),
    }
}

impl NamespaceArgs {
    /// The settings: these flags over `base`.
    fn spec(&self, base: NamespaceSpec) -> NamespaceSpec {
        let base = if self.replace {
            NamespaceSpec::default()
        } else {
            base
        };
        let q = base.quota.clone();
        let mut routes = base.routes.clone();
        for claim in &self.claims {
            if !routes.contains(claim) {
                routes.push(claim.clone());
            }
        }
        NamespaceSpec {
            quota: Quota {
                replicas: self.max_replicas.or(q.replicas),
                memory: self.max_memory.or(q.memory),
                component_bytes: self.max_component_bytes.or(q.component_bytes),
                storage: self.max_storage.or(q.storage),
                secrets: self.max_secrets.or(q.secrets),
            },
            routes,
            logs: LogRetention {
                max_age: self.log_max_age.or(base.logs.max_age),
                max_bytes: self.log_max_bytes.or(base.logs.max_bytes),
            },
        }
    }
}

/// `shoal create …`.
#[derive(Debug, Subcommand)]
pub enum CreateVerb {
    /// A namespace, with its quotas and claimed routes.
    Namespace(NamespaceArgs),
}

/// `shoal update …`.
#[derive(Debug, Subcommand)]
pub enum UpdateVerb {
    /// A namespace's quotas and claimed routes: the limits given change,
    /// the rest stay (unless --replace).
    Namespace(NamespaceArgs),
}

/// `shoal audit`.
#[derive(Debug, Args)]
pub struct AuditArgs {
    /// Only calls since this long ago (like 10m, 2h, 7d).
    #[arg(long, value_parser = humantime::parse_duration)]
    since: Option<Duration>,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t)]
    format: Format,
}

fn print_json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// Runs `shoal auth …`.
pub async fn auth(client: &Client, verb: AuthVerb) -> anyhow::Result<()> {
    match verb {
        AuthVerb::Whoami { format } => {
            let me: WhoAmI = client.get("/v1/auth/whoami").await?;
            match format {
                Format::Json => print_json(&me)?,
                Format::Table => {
                    println!("{}", me.principal);
                    for b in &me.principal.bindings {
                        println!("  role {b}");
                    }
                    if let (Some(id), Some(expires)) = (&me.token, me.expires_ms) {
                        println!(
                            "  token {id}, expires in {}",
                            span(expires.saturating_sub(now_ms()))
                        );
                    }
                }
            }
        }
        AuthVerb::CanI {
            verb,
            resource,
            cluster,
        } => {
            let mut path = format!("/v1/auth/can-i?verb={verb}&resource={resource}");
            if !cluster {
                path.push_str(&format!("&namespace={}", client.namespace()));
            }
            let answer: CanI = client.get(&path).await?;
            println!(
                "{}: {}",
                if answer.allowed { "yes" } else { "no" },
                answer.reason
            );
            if !answer.allowed {
                bail!("not allowed");
            }
        }
        AuthVerb::Token(verb) => token(client, verb).await?,
    }
    Ok(())
}

async fn token(client: &Client, verb: TokenVerb) -> anyhow::Result<()> {
    match verb {
        TokenVerb::Create {
            name,
            roles,
            cluster,
            ttl,
            user,
            quiet,
        } => {
            let namespace = if cluster {
                None
            } else {
                Some(Name::new(client.namespace()).context("the namespace")?)
            };
            let created: CreatedToken = client
                .post(
                    "/v1/auth/tokens",
                    &CreateTokenRequest {
                        principal: name,
                        kind: if user {
                            PrincipalKind::User
                        } else {
                            PrincipalKind::ServiceAccount
                        },
                        bindings: roles
                            .into_iter()
                            .map(|role| Binding {
                                role,
                                namespace: namespace.clone(),
                            })
                            .collect(),
                        ttl_seconds: ttl.as_secs().max(1),
                    },
                )
                .await?;
            if quiet {
                println!("{}", created.token);
                return Ok(());
            }
            let info = &created.info;
            println!(
                "token {} for {} ({}), expires in {}:",
                info.id,
                info.principal,
                info.principal
                    .bindings
                    .iter()
                    .map(Binding::to_string)
                    .collect::<Vec<_>>()
                    .join(", "),
                span(info.expires_ms.saturating_sub(now_ms()))
            );
            println!();
            println!("  {}", created.token);
            println!();
            println!("It is shown only now. Its holder saves it in their client config with:");
            println!(
                "  shoal config set-context {} --api {} --namespace {} --token-stdin --use",
                info.principal.name,
                client.base(),
                namespace.as_ref().map_or("default", Name::as_str),
            );
        }
        TokenVerb::List { format } => {
            let list: Vec<TokenInfo> = client.get("/v1/auth/tokens").await?;
            match format {
                Format::Json => print_json(&list)?,
                Format::Table => println!("{}", tables::tokens(&list)),
            }
        }
        TokenVerb::Revoke { id } => {
            let info: TokenInfo = client.delete_json(&format!("/v1/auth/tokens/{id}")).await?;
            println!("token {} of {} revoked", info.id, info.principal);
        }
    }
    Ok(())
}

/// Runs `shoal create namespace` or `shoal update namespace`.
pub async fn put_namespace(
    client: &Client,
    args: NamespaceArgs,
    create: bool,
) -> anyhow::Result<()> {
    let base = if create {
        NamespaceSpec::default()
    } else {
        client
            .get::<NamespaceInfo>(&format!("/v1/namespaces/{}", args.name))
            .await?
            .spec
    };
    let spec = args.spec(base);
    let info: NamespaceInfo = client
        .put_json(
            &format!("/v1/namespaces/{}", args.name),
            &NamespaceRequest { spec, create },
        )
        .await?;
    println!(
        "namespace {} {}",
        info.name,
        if create { "created" } else { "updated" }
    );
    Ok(())
}

/// `shoal get namespaces`.
pub async fn list_namespaces(client: &Client, format: Format) -> anyhow::Result<()> {
    let list: Vec<NamespaceInfo> = client.get("/v1/namespaces").await?;
    match format {
        Format::Json => print_json(&list),
        Format::Table => {
            println!("{}", tables::namespaces(&list));
            Ok(())
        }
    }
}

/// `shoal describe namespace NAME`.
pub async fn describe_namespace(client: &Client, name: &str, format: Format) -> anyhow::Result<()> {
    let ns: NamespaceInfo = client.get(&format!("/v1/namespaces/{name}")).await?;
    if let Format::Json = format {
        return print_json(&ns);
    }
    let q = &ns.spec.quota;
    let u = &ns.usage;
    let none = || "no limit".to_string();
    println!("Name:     {}", ns.name);
    println!("Created:  {}", age(now_ms().saturating_sub(ns.created_ms)));
    println!("Apps:     {}", ns.apps);
    println!();
    let rows = vec![
        vec![
            "replicas".into(),
            u.replicas.to_string(),
            q.replicas.map_or_else(none, |n| n.to_string()),
        ],
        vec![
            "memory".into(),
            u.memory.to_string(),
            q.memory.map_or_else(none, |m| m.to_string()),
        ],
        vec![
            "component-bytes".into(),
            u.component_bytes.to_string(),
            q.component_bytes.map_or_else(none, |m| m.to_string()),
        ],
        vec![
            "storage".into(),
            u.storage.to_string(),
            q.storage.map_or_else(none, |m| m.to_string()),
        ],
        vec![
            "secrets".into(),
            u.secrets.to_string(),
            q.secrets.map_or_else(none, |n| n.to_string()),
        ],
    ];
    println!(
        "{}",
        tables::render(&["RESOURCE", "USED", "QUOTA"], &["USED", "QUOTA"], rows)
    );
    if !ns.spec.routes.is_empty() {
        println!();
        println!("Claimed routes:");
        for claim in &ns.spec.routes {
            println!("  {claim}");
        }
    }
    Ok(())
}

/// `shoal audit`: the namespace's records with `-n`, else all.
pub async fn audit(client: &Client, args: AuditArgs) -> anyhow::Result<()> {
    let mut path = "/v1/audit".to_string();
    let mut query = Vec::new();
    if let Some(ns) = client.namespace_given() {
        query.push(format!("namespace={ns}"));
    }
    if let Some(since) = args.since {
        let since_ms = now_ms().saturating_sub(u64::try_from(since.as_millis()).unwrap_or(0));
        query.push(format!("since_ms={since_ms}"));
    }
    if !query.is_empty() {
        path = format!("{path}?{}", query.join("&"));
    }
    let records: Vec<AuditRecord> = client.get(&path).await?;
    match args.format {
        Format::Json => print_json(&records),
        Format::Table => {
            println!("{}", tables::audit(&records));
            Ok(())
        }
    }
}
