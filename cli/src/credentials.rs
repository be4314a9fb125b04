//! NATS credentials: decentralised JWT authentication, as nats-server
//! implements it.
//!
//! An *authority* directory holds three nkeys seeds: an operator, the
//! system account and Shoal's account. nats-server is given the operator's
//! JWT and both account JWTs (its `MEMORY` resolver, preloaded), and trusts
//! any user JWT that Shoal's account key signs. So every process gets a
//! credential of its own with the permissions of its [`Identity`], and a
//! new host joins with a freshly signed credential, without any change to
//! nats-server or a restart.
//!
//! The authority directory is private (0700, seeds 0600): whoever holds the
//! account seed can mint credentials. `shoal up` keeps it under its data
//! dir; a multi-machine cluster keeps it on the operator's machine and
//! hands out `.creds` files (`shoal nats creds …`).

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use clap::Subcommand;
use nkeys::KeyPair;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha512_256};
use shoal_api::identity::{Identity, Permissions};
use shoal_api::wire::HostId;
use shoal_host::keyfile;

/// The JWT header every NATS JWT carries.
const HEADER: &str = r#"{"typ":"JWT","alg":"ed25519-nkey"}"#;

/// The NATS credentials authority of one cluster.
pub struct Authority {
    dir: PathBuf,
    operator: KeyPair,
    system: KeyPair,
    account: KeyPair,
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A signed NATS JWT with `claims` (its `jti`, `iat` and `iss` filled in).
fn encode(mut claims: Value, signer: &KeyPair) -> anyhow::Result<String> {
    claims["iat"] = json!(now_secs());
    claims["iss"] = json!(signer.public_key());
    // The id is a hash of the claims without it (SHA-512/256 in base32,
    // as nats-io/jwt writes it); nats-server does not check it.
    if let Some(map) = claims.as_object_mut() {
        map.remove("jti");
    }
    let hash = Sha512_256::digest(serde_json::to_vec(&claims)?);
    claims["jti"] = json!(data_encoding::BASE32_NOPAD.encode(&hash));
    let body = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(HEADER),
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims)?)
    );
    let signature = signer
        .sign(body.as_bytes())
        .map_err(|e| anyhow::anyhow!("cannot sign a NATS JWT: {e}"))?;
    Ok(format!("{body}.{}", URL_SAFE_NO_PAD.encode(signature)))
}

fn permission_claims(permissions: &Permissions) -> Value {
    let rule = |r: &shoal_api::identity::Rule| {
        let mut v = json!({});
        if !r.allow.is_empty() {
            v["allow"] = json!(r.allow);
        }
        if !r.deny.is_empty() {
            v["deny"] = json!(r.deny);
        }
        v
    };
    let mut nats = json!({
        "pub": rule(&permissions.publish),
        "sub": rule(&permissions.subscribe),
        "subs": -1,
        "data": -1,
        "payload": -1,
        "type": "user",
        "version": 2,
    });
    if permissions.responses {
        nats["resp"] = json!({ "max": 1, "ttl": 0 });
    }
    nats
}

fn seed(dir: &Path, file: &str, make: fn() -> KeyPair) -> anyhow::Result<KeyPair> {
    let path = dir.join(file);
    let text = keyfile::read_or_create(&path, || make().seed().map_err(|e| e.to_string()))?;
    KeyPair::from_seed(text.trim())
        .map_err(|e| anyhow::anyhow!("{} does not hold an nkeys seed: {e}", path.display()))
}

impl Authority {
    /// The authority in `dir`, created there (keys and all) if it is new.
    pub fn open_or_create(dir: &Path) -> anyhow::Result<Self> {
        Ok(Authority {
            dir: dir.to_path_buf(),
            operator: seed(dir, "operator.nk", KeyPair::new_operator)?,
            system: seed(dir, "system-account.nk", KeyPair::new_account)?,
            account: seed(dir, "shoal-account.nk", KeyPair::new_account)?,
        })
    }

    /// The authority in `dir`, which must exist.
    pub fn open(dir: &Path) -> anyhow::Result<Self> {
        if !dir.join("shoal-account.nk").is_file() {
            bail!(
                "{} holds no NATS authority: create one with `shoal nats init --dir {}`",
                dir.display(),
                dir.display()
            );
        }
        Self::open_or_create(dir)
    }

    /// Where it lives.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn account_jwt(&self, name: &str, key: &KeyPair, jetstream: bool) -> anyhow::Result<String> {
        let mut limits = json!({
            "subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1,
            "wildcards": true, "conn": -1, "leaf": -1,
        });
        if jetstream {
            for k in ["mem_storage", "disk_storage", "streams", "consumer"] {
                limits[k] = json!(-1);
            }
        }
        encode(
            json!({
                "name": name,
                "sub": key.public_key(),
                "nats": {
                    "limits": limits,
                    "default_permissions": { "pub": {}, "sub": {} },
                    "type": "account",
                    "version": 2,
                },
            }),
            &self.operator,
        )
    }

    /// The part of a nats-server configuration that makes it trust this
    /// authority: the operator, the system account and Shoal's account.
    /// Include it in a server's configuration (`include nats-auth.conf`).
    pub fn server_config(&self) -> anyhow::Result<String> {
        let operator = encode(
            json!({
                "name": "shoal",
                "sub": self.operator.public_key(),
                "nats": {
                    "system_account": self.system.public_key(),
                    "type": "operator",
                    "version": 2,
                },
            }),
            &self.operator,
        )?;
        let system = self.account_jwt("SYS", &self.system, false)?;
        let shoal = self.account_jwt("SHOAL", &self.account, true)?;
        Ok(format!(
            "# Written by `shoal nats init`: trust Shoal's NATS authority.\n\
             operator: \"{operator}\"\n\
             system_account: \"{sys}\"\n\
             resolver: MEMORY\n\
             resolver_preload: {{\n  \"{sys}\": \"{system}\"\n  \"{acc}\": \"{shoal}\"\n}}\n",
            sys = self.system.public_key(),
            acc = self.account.public_key(),
        ))
    }

    /// Writes [`Self::server_config`] to `nats-auth.conf` in the authority
    /// directory and returns its path.
    pub fn write_server_config(&self) -> anyhow::Result<PathBuf> {
        let path = self.dir.join("nats-auth.conf");
        std::fs::write(&path, self.server_config()?)
            .with_context(|| format!("cannot write {}", path.display()))?;
        Ok(path)
    }

    /// A `.creds` file's text for `identity`, valid for `ttl` (or forever).
    pub fn creds(&self, identity: &Identity, ttl: Option<Duration>) -> anyhow::Result<String> {
        let user = KeyPair::new_user();
        let mut claims = json!({
            "name": identity.name(),
            "sub": user.public_key(),
            "nats": permission_claims(&identity.permissions()),
        });
        if let Some(ttl) = ttl {
            claims["exp"] = json!(now_secs().saturating_add(ttl.as_secs()));
        }
        let jwt = encode(claims, &self.account)?;
        let seed = user
            .seed()
            .map_err(|e| anyhow::anyhow!("cannot write a user seed: {e}"))?;
        Ok(format!(
            "-----BEGIN NATS USER JWT-----\n{jwt}\n------END NATS USER JWT------\n\n\
             ************************* IMPORTANT *************************\n\
             NKEY Seed printed below can be used to sign and prove identity.\n\
             NKEYs are sensitive and should be treated as secrets.\n\n\
             -----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n\n\
             *************************************************************\n"
        ))
    }
}

/// `shoal nats`: the cluster's NATS authority and credentials.
#[derive(Debug, Subcommand)]
pub enum NatsCommand {
    /// Create the NATS authority (operator, accounts) and write
    /// `nats-auth.conf`, the part of nats-server's configuration that
    /// trusts it. Idempotent: the keys are made once.
    Init {
        /// The authority's directory [default: DATA_DIR/nats-auth].
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Print (or write) a credential for one process or client.
    Creds {
        #[command(subcommand)]
        who: Who,
        /// The authority's directory [default: DATA_DIR/nats-auth].
        #[arg(long, global = true)]
        dir: Option<PathBuf>,
        /// Write it to this file (mode 0600) instead of stdout.
        #[arg(long, short = 'o', global = true)]
        output: Option<PathBuf>,
        /// Expire it after this long (like 24h); without it, it never expires.
        #[arg(long, global = true, value_parser = shoal_api::DurationSpec::parse)]
        ttl: Option<shoal_api::DurationSpec>,
    },
}

/// Whose credential.
#[derive(Debug, Subcommand)]
pub enum Who {
    /// A scheduler: commands hosts, owns desired state.
    Scheduler,
    /// A host: publishes only its own heartbeat, takes only its own commands.
    Host {
        /// The host's id (its `--name`).
        name: String,
    },
    /// The users' own NATS clients of a namespace: only `ns.<namespace>.>`,
    /// with replies under `_INBOX.ns-<namespace>`.
    Namespace {
        /// The namespace.
        name: String,
    },
    /// Full rights, for an operator's NATS tools.
    Admin,
}

fn authority_dir(dir: Option<PathBuf>) -> PathBuf {
    dir.unwrap_or_else(|| crate::data_dir::resolve(None).join("nats-auth"))
}

/// Runs `shoal nats …`.
pub fn run(command: NatsCommand) -> anyhow::Result<()> {
    match command {
        NatsCommand::Init { dir } => {
            let authority = Authority::open_or_create(&authority_dir(dir))?;
            let conf = authority.write_server_config()?;
            println!("NATS authority in {}", authority.dir().display());
            println!(
                "add `include {}` to each nats-server's configuration (or copy it beside it)",
                conf.display()
            );
            Ok(())
        }
        NatsCommand::Creds {
            who,
            dir,
            output,
            ttl,
        } => {
            let authority = Authority::open(&authority_dir(dir))?;
            let identity = match who {
                Who::Scheduler => Identity::Scheduler,
                Who::Admin => Identity::Admin,
                Who::Host { name } => {
                    Identity::Host(HostId::new(name).map_err(anyhow::Error::msg)?)
                }
                Who::Namespace { name } => Identity::Namespace(shoal_api::Name::new(name)?),
            };
            let creds = authority.creds(&identity, ttl.map(|t| t.get()))?;
            match output {
                Some(path) => {
                    if path.exists() {
                        std::fs::remove_file(&path)
                            .with_context(|| format!("cannot replace {}", path.display()))?;
                    }
                    keyfile::read_or_create(&path, || Ok(creds))?;
                    eprintln!("wrote {}", path.display());
                }
                None => print!("{creds}"),
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jwts_are_signed_by_their_issuer() {
        let dir = tempfile::tempdir().unwrap();
        let auth = Authority::open_or_create(&dir.path().join("auth")).unwrap();
        let creds = auth.creds(&Identity::Scheduler, None).unwrap();
        let jwt = creds.lines().nth(1).unwrap();
        let parts: Vec<&str> = jwt.split('.').collect();
        assert_eq!(parts.len(), 3);
        let claims: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        assert_eq!(claims["iss"], json!(auth.account.public_key()));
        assert_eq!(claims["nats"]["type"], json!("user"));
        let signature = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
        auth.account
            .verify(format!("{}.{}", parts[0], parts[1]).as_bytes(), &signature)
            .unwrap();
        // The same keys after a reload.
        let again = Authority::open(&dir.path().join("auth")).unwrap();
        assert_eq!(again.account.public_key(), auth.account.public_key());
    }
}
