//! Who is calling: API tokens, kept hashed in a JetStream bucket and
//! checked on every call, and the roles that say what each may do.
//!
//! Every scheduler keeps the whole token table in memory, current through a
//! KV watch, so a check costs a hash-map lookup and one SHA-256, and a
//! revocation made through any scheduler takes effect on all of them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use async_nats::jetstream::{kv, stream};
use serde::{Deserialize, Serialize};
use shoal_api::access::{Principal, Roles};
use shoal_api::resources::{TokenInfo, TokenState};
use shoal_api::subjects::TOKENS_BUCKET;
use shoal_api::token::{BearerToken, ID_BYTES, SECRET_BYTES, TokenHash, TokenId};
use shoal_api::wire::now_ms;
use tokio::sync::watch;

use crate::SchedulerError;
use crate::jetstream::JetStream;
use crate::store::unavailable;
use crate::tunables::{BOOTSTRAP_TOKEN_TTL, MAX_TOKEN_TTL, TOKENS_HISTORY};

/// What the scheduler keeps about a token: never its secret.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenRecord {
    /// Who it names.
    pub principal: Principal,
    /// The SHA-256 of its secret.
    pub hash: TokenHash,
    /// When it was made, in ms since the epoch.
    pub created_ms: u64,
    /// When it stops working, in ms since the epoch.
    pub expires_ms: u64,
    /// When it was revoked, if it was.
    #[serde(default)]
    pub revoked_ms: Option<u64>,
    /// Who made it.
    pub created_by: String,
}

impl TokenRecord {
    /// Whether it works at `now`.
    pub fn state(&self, now: u64) -> TokenState {
        if self.revoked_ms.is_some() {
            TokenState::Revoked
        } else if now >= self.expires_ms {
            TokenState::Expired
        } else {
            TokenState::Active
        }
    }

    /// The record as lists show it.
    pub fn info(&self, id: &TokenId, now: u64) -> TokenInfo {
        TokenInfo {
            id: id.clone(),
            principal: self.principal.clone(),
            created_ms: self.created_ms,
            expires_ms: self.expires_ms,
            created_by: self.created_by.clone(),
            state: self.state(now),
        }
    }
}

/// Who made a call.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The principal and its roles.
    pub principal: Principal,
    /// The token it used (`None` when authentication is off).
    pub token: Option<TokenId>,
    /// When that token expires.
    pub expires_ms: Option<u64>,
}

impl Caller {
    /// The caller when authentication is off: everything is allowed, and
    /// the audit trail says `anonymous`.
    pub fn anonymous() -> Caller {
        Caller {
            principal: Principal::anonymous(),
            token: None,
            expires_ms: None,
        }
    }
}

/// Why a call was not authenticated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No `Authorization: Bearer` header.
    #[error(
        "this call needs a token: run `shoal auth whoami` to check your context, or set SHOAL_TOKEN"
    )]
    Missing,
    /// The header holds something that is not a Shoal token.
    #[error("the Authorization header does not hold a Shoal token (shoal_<id>_<secret>)")]
    Malformed,
    /// No such token, or the secret does not match.
    #[error("the token is not valid here: ask an admin for a new one")]
    Unknown,
    /// Past its expiry.
    #[error("token {0} has expired: ask an admin for a new one")]
    Expired(TokenId),
    /// Revoked.
    #[error("token {0} was revoked: ask an admin for a new one")]
    Revoked(TokenId),
    /// The scheduler lost its watch of the tokens bucket, so it cannot
    /// tell whether a token was revoked.
    #[error(
        "this scheduler cannot check tokens right now (JetStream is away): try again in a moment"
    )]
    Stale,
}

/// The token table and the roles.
pub struct Access {
    /// `None` when authentication is off.
    tokens: Option<Tokens>,
    /// Every role the scheduler knows.
    pub roles: Roles,
}

struct Tokens {
    bucket: kv::Store,
    table: Arc<RwLock<HashMap<TokenId, TokenRecord>>>,
    /// False while the watch is down: revocations could be missed.
    current: Arc<AtomicBool>,
}

impl Access {
    /// Authentication off: every call is an anonymous admin.
    pub fn open_to_all(roles: Roles) -> Access {
        Access {
            tokens: None,
            roles,
        }
    }

    /// Opens the tokens bucket, loads it, and keeps it current until `stop`.
    pub async fn open(
        js: &JetStream,
        roles: Roles,
        stop: watch::Receiver<bool>,
    ) -> Result<Access, SchedulerError> {
        let bucket = js
            .create_or_update_key_value(js.bucket(kv::Config {
                bucket: TOKENS_BUCKET.to_string(),
                description: "Shoal API tokens, hashed: one key per token id".into(),
                history: TOKENS_HISTORY,
                storage: stream::StorageType::File,
                ..Default::default()
            }))
            .await
            .map_err(|e| unavailable("opening the tokens bucket", e))?;
        let table = Arc::new(RwLock::new(HashMap::new()));
        let updates = reload(&bucket, &table).await?;
        let current = Arc::new(AtomicBool::new(true));
        tokio::spawn(follow(
            bucket.clone(),
            updates,
            table.clone(),
            current.clone(),
            stop,
        ));
        Ok(Access {
            tokens: Some(Tokens {
                bucket,
                table,
                current,
            }),
            roles,
        })
    }

    /// Whether calls need a token.
    pub fn enabled(&self) -> bool {
        self.tokens.is_some()
    }

    /// Who sent `authorization` (the header's value).
    pub fn authenticate(&self, authorization: Option<&str>) -> Result<Caller, AuthError> {
        let Some(tokens) = &self.tokens else {
            return Ok(Caller::anonymous());
        };
        if !tokens.current.load(Ordering::SeqCst) {
            return Err(AuthError::Stale);
        }
        let given = authorization
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or(AuthError::Missing)?;
        let token = BearerToken::parse(given.trim()).ok_or(AuthError::Malformed)?;
        let table = tokens.table.read().unwrap_or_else(|p| p.into_inner());
        let record = table.get(token.id()).ok_or(AuthError::Unknown)?;
        if !record.hash.matches(&token) {
            return Err(AuthError::Unknown);
        }
        match record.state(now_ms()) {
            TokenState::Active => Ok(Caller {
                principal: record.principal.clone(),
                token: Some(token.id().clone()),
                expires_ms: Some(record.expires_ms),
            }),
            TokenState::Expired => Err(AuthError::Expired(token.id().clone())),
            TokenState::Revoked => Err(AuthError::Revoked(token.id().clone())),
        }
    }

    fn tokens(&self) -> Result<&Tokens, SchedulerError> {
        self.tokens.as_ref().ok_or_else(|| {
            SchedulerError::Invalid(
                "authentication is off on this scheduler (--insecure-no-auth): there are no tokens"
                    .into(),
            )
        })
    }

    /// Makes a token for `principal`, valid for `ttl_ms`.
    pub async fn mint(
        &self,
        principal: Principal,
        ttl_ms: u64,
        created_by: &str,
    ) -> Result<(BearerToken, TokenRecord), SchedulerError> {
        let tokens = self.tokens()?;
        if ttl_ms == 0 || ttl_ms > MAX_TOKEN_TTL.as_millis() as u64 {
            return Err(SchedulerError::Invalid(format!(
                "a token lives between 1 s and {}: ask for a --ttl in that range",
                humane(MAX_TOKEN_TTL)
            )));
        }
        let token = random_token()?;
        let now = now_ms();
        let record = TokenRecord {
            principal,
            hash: token.hash(),
            created_ms: now,
            expires_ms: now.saturating_add(ttl_ms),
            revoked_ms: None,
            created_by: created_by.to_string(),
        };
        let value =
            serde_json::to_vec(&record).map_err(|e| SchedulerError::Internal(e.to_string()))?;
        tokens
            .bucket
            .create(token.id().as_str(), value.into())
            .await
            .map_err(|e| unavailable("storing the token", e))?;
        apply_update(
            &tokens.table,
            token.id().as_str(),
            Some(&record_bytes(&record)?),
        );
        Ok((token, record))
    }

    /// On a scheduler whose bucket holds no token at all, makes the first
    /// admin token. Only one scheduler ever does: the bucket's `bootstrap`
    /// key is created once.
    pub async fn bootstrap(&self) -> Result<Option<BearerToken>, SchedulerError> {
        let Ok(tokens) = self.tokens() else {
            return Ok(None);
        };
        let empty = tokens
            .table
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .is_empty();
        if !empty {
            return Ok(None);
        }
        let marker = format!("{{\"at_ms\":{}}}", now_ms());
        if tokens
            .bucket
            .create(BOOTSTRAP_KEY, marker.into_bytes().into())
            .await
            .is_err()
        {
            // Another scheduler bootstrapped, or did before: not ours.
            return Ok(None);
        }
        let (token, _) = self
            .mint(
                Principal::first_admin(),
                BOOTSTRAP_TOKEN_TTL.as_millis() as u64,
                "bootstrap",
            )
            .await?;
        Ok(Some(token))
    }

    /// Revokes the token `id`; its record stays, for lists and audits.
    pub async fn revoke(&self, id: &TokenId) -> Result<TokenRecord, SchedulerError> {
        let tokens = self.tokens()?;
        let mut record = self
            .record(id)
            .ok_or_else(|| SchedulerError::NotFound(format!("there is no token {id}")))?;
        if record.revoked_ms.is_none() {
            record.revoked_ms = Some(now_ms());
            let value = record_bytes(&record)?;
            tokens
                .bucket
                .put(id.as_str(), value.clone().into())
                .await
                .map_err(|e| unavailable("revoking the token", e))?;
            apply_update(&tokens.table, id.as_str(), Some(&value));
        }
        Ok(record)
    }

    /// The token `id`'s record.
    pub fn record(&self, id: &TokenId) -> Option<TokenRecord> {
        let tokens = self.tokens.as_ref()?;
        tokens
            .table
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned()
    }

    /// Every token, oldest first.
    pub fn list(&self) -> Vec<(TokenId, TokenRecord)> {
        let Some(tokens) = &self.tokens else {
            return Vec::new();
        };
        let mut all: Vec<_> = tokens
            .table
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(id, record)| (id.clone(), record.clone()))
            .collect();
        all.sort_by_key(|(id, record)| (record.created_ms, id.clone()));
        all
    }
}

/// The key that marks the first admin token as made.
const BOOTSTRAP_KEY: &str = "bootstrap";

fn record_bytes(record: &TokenRecord) -> Result<Vec<u8>, SchedulerError> {
    serde_json::to_vec(record).map_err(|e| SchedulerError::Internal(e.to_string()))
}

fn humane(d: std::time::Duration) -> String {
    format!("{} days", d.as_secs() / 86_400)
}

/// A token from the operating system's CSPRNG.
fn random_token() -> Result<BearerToken, SchedulerError> {
    use ring::rand::{SecureRandom, SystemRandom};
    let rng = SystemRandom::new();
    let mut id = [0u8; ID_BYTES];
    let mut secret = [0u8; SECRET_BYTES];
    rng.fill(&mut id)
        .and_then(|()| rng.fill(&mut secret))
        .map_err(|_| SchedulerError::Internal("the system's random source failed".into()))?;
    Ok(BearerToken::from_random(id, secret))
}

/// Applies one bucket entry to the table: a put replaces, anything else
/// (`value` `None`) removes. Keys that are not token ids are skipped.
fn apply_update(table: &RwLock<HashMap<TokenId, TokenRecord>>, key: &str, value: Option<&[u8]>) {
    let Some(id) = TokenId::parse(key) else {
        return;
    };
    let mut table = table.write().unwrap_or_else(|p| p.into_inner());
    match value.map(serde_json::from_slice::<TokenRecord>) {
        Some(Ok(record)) => {
            table.insert(id, record);
        }
        Some(Err(e)) => {
            tracing::error!(token = %id, error = %e, "skipping an unreadable token record");
        }
        None => {
            table.remove(&id);
        }
    }
}

/// Follows the bucket until `stop`. When the watch ends, calls are refused
/// (fail closed: a revocation made through another scheduler might go
/// unseen) until it is back and every token loaded again.
async fn follow(
    bucket: kv::Store,
    updates: kv::Watch,
    table: Arc<RwLock<HashMap<TokenId, TokenRecord>>>,
    current: Arc<AtomicBool>,
    stop: watch::Receiver<bool>,
) {
    crate::follow::follow_bucket(
        "tokens",
        updates,
        stop,
        |entry| {
            let value = (entry.operation == kv::Operation::Put).then_some(&entry.value[..]);
            apply_update(&table, &entry.key, value);
        },
        |back| {
            current.store(back, Ordering::SeqCst);
            if !back {
                tracing::error!("the tokens watch ended: refusing calls until it is back");
            }
        },
        || reload(&bucket, &table),
    )
    .await;
}

/// Watches the bucket, then loads every token into `table` (in that order,
/// so that no change in between is lost).
async fn reload(
    bucket: &kv::Store,
    table: &RwLock<HashMap<TokenId, TokenRecord>>,
) -> Result<kv::Watch, SchedulerError> {
    let updates = bucket
        .watch_all()
        .await
        .map_err(|e| unavailable("watching the tokens bucket", e))?;
    for (key, value) in crate::store::kv_entries(bucket, "tokens").await? {
        apply_update(table, &key, Some(&value));
    }
    Ok(updates)
}
