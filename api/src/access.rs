//! Who may do what: verbs on resources, granted by roles bound per
//! namespace or cluster-wide (the Kubernetes RBAC shape, kept small).
//!
//! A [`Principal`] holds [`Binding`]s; each binds a [`Role`] in one
//! namespace or across the cluster. [`Roles::decide`] answers whether a
//! principal may use a [`Verb`] on a [`Resource`] in a [`Scope`], and says
//! why: the binding and rule that allowed it, or the permission missing and
//! the roles that would grant it. Built-in roles are `admin`, `edit`,
//! `view` and `invoke`; [`Roles::with_custom`] adds roles from TOML.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::Name;

macro_rules! vocabulary {
    ($(#[$doc:meta])* $t:ident, $what:literal { $($(#[$vdoc:meta])* $variant:ident => $word:literal),* $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        pub enum $t {
            $($(#[$vdoc])* #[serde(rename = $word)] $variant,)*
        }

        impl $t {
            /// Every value, in order.
            pub const ALL: &[$t] = &[$($t::$variant),*];

            /// The word the API, the CLI and role files use.
            pub fn word(self) -> &'static str {
                match self {
                    $($t::$variant => $word,)*
                }
            }
        }

        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.pad(self.word())
            }
        }

        impl std::str::FromStr for $t {
            type Err = String;

            fn from_str(text: &str) -> Result<Self, String> {
                $t::ALL
                    .iter()
                    .copied()
                    .find(|v| v.word() == text)
                    .ok_or_else(|| format!(
                        "unknown {} {text:?}: expected one of {}",
                        $what,
                        $t::ALL.iter().map(|v| v.word()).collect::<Vec<_>>().join(", ")
                    ))
            }
        }
    };
}

vocabulary! {
    /// What a call does.
    Verb, "verb" {
        /// Read one.
        Get => "get",
        /// List all.
        List => "list",
        /// Follow changes.
        Watch => "watch",
        /// Make a new one.
        Create => "create",
        /// Change one.
        Update => "update",
        /// Remove one.
        Delete => "delete",
        /// Invoke a worker.
        Invoke => "invoke",
        /// Change a replica count.
        Scale => "scale",
        /// Roll back or follow a rollout.
        Rollout => "rollout",
        /// Read logs.
        Logs => "logs",
        /// Set a secret's value.
        SecretsSet => "secrets-set",
        /// List secret names (values are never readable).
        SecretsList => "secrets-list",
    }
}

vocabulary! {
    /// What a call is about.
    Resource, "resource" {
        /// Apps and their components.
        Apps => "apps",
        /// Replicas.
        Pods => "pods",
        /// Guest and lifecycle logs.
        Logs => "logs",
        /// Events.
        Events => "events",
        /// Core dumps of trapping invocations: they hold a guest's memory,
        /// so whoever reads them may read what the guest read.
        Dumps => "dumps",
        /// Secrets.
        Secrets => "secrets",
        /// Hosts (cluster-wide only).
        Hosts => "hosts",
        /// Namespaces and their quotas.
        Namespaces => "namespaces",
        /// API tokens.
        Tokens => "tokens",
        /// The audit trail.
        Audit => "audit",
        /// The scheduler's metrics (cluster-wide only).
        Metrics => "metrics",
    }
}

impl Resource {
    /// Whether `verb` on this resource reaches beyond any one namespace:
    /// hosts are shared by all, and making, changing or removing a
    /// namespace (its quotas) is not for its own members to do.
    pub fn cluster_wide(self, verb: Verb) -> bool {
        match self {
            Resource::Hosts | Resource::Metrics => true,
            Resource::Namespaces => matches!(verb, Verb::Create | Verb::Update | Verb::Delete),
            _ => false,
        }
    }
}

/// The scope a call with `verb` on `resource` about `namespace` is checked
/// in: the API and `shoal auth can-i` both ask this, so they agree.
pub fn scope_for(verb: Verb, resource: Resource, namespace: Option<Name>) -> Scope {
    match namespace {
        Some(ns) if !resource.cluster_wide(verb) => Scope::Namespace(ns),
        _ => Scope::Cluster,
    }
}

/// Where a permission applies.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Scope {
    /// Everything, in every namespace: only a cluster-wide binding reaches it.
    Cluster,
    /// One namespace.
    Namespace(Name),
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scope::Cluster => f.write_str("cluster-wide"),
            Scope::Namespace(ns) => write!(f, "in namespace {ns}"),
        }
    }
}

/// A role bound in one namespace, or cluster-wide when `namespace` is `None`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Binding {
    /// The role's name.
    pub role: Name,
    /// The namespace it applies in; `None` for every namespace and the
    /// cluster-wide resources.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<Name>,
}

impl Binding {
    /// Whether this binding reaches `scope`.
    pub fn covers(&self, scope: &Scope) -> bool {
        match (&self.namespace, scope) {
            (None, _) => true,
            (Some(mine), Scope::Namespace(ns)) => mine == ns,
            (Some(_), Scope::Cluster) => false,
        }
    }

    /// The scope the binding grants.
    pub fn scope(&self) -> Scope {
        match &self.namespace {
            None => Scope::Cluster,
            Some(ns) => Scope::Namespace(ns.clone()),
        }
    }
}

impl Binding {
    /// The `admin` role, cluster-wide.
    pub fn cluster_admin() -> Binding {
        Binding {
            role: Name::trusted(ADMIN),
            namespace: None,
        }
    }
}

impl fmt::Display for Binding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.role, self.scope())
    }
}

/// What kind of principal a token stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum PrincipalKind {
    /// A person.
    User,
    /// A program: CI, a bot, another service.
    #[default]
    ServiceAccount,
}

impl fmt::Display for PrincipalKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(match self {
            PrincipalKind::User => "user",
            PrincipalKind::ServiceAccount => "service-account",
        })
    }
}

/// Who makes an API call, and the roles they hold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Principal {
    /// The principal's name, as the audit trail shows it.
    pub name: Name,
    /// A person or a program.
    #[serde(default)]
    pub kind: PrincipalKind,
    /// The roles it holds, and where.
    pub bindings: Vec<Binding>,
}

impl Principal {
    /// Who calls when authentication is off: an admin named `anonymous`.
    pub fn anonymous() -> Principal {
        Principal {
            name: Name::trusted("anonymous"),
            kind: PrincipalKind::User,
            bindings: vec![Binding::cluster_admin()],
        }
    }

    /// The first admin, whose token a new cluster makes for itself.
    pub fn first_admin() -> Principal {
        Principal {
            name: Name::trusted(ADMIN),
            kind: PrincipalKind::User,
            bindings: vec![Binding::cluster_admin()],
        }
    }
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.kind, self.name)
    }
}

/// A set of verbs on a set of resources.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// The verbs; `"*"` in a role file means all of them.
    #[serde(with = "every")]
    pub verbs: BTreeSet<Verb>,
    /// The resources; `"*"` in a role file means all of them.
    #[serde(with = "every")]
    pub resources: BTreeSet<Resource>,
}

impl Rule {
    fn new(verbs: &[Verb], resources: &[Resource]) -> Rule {
        Rule {
            verbs: verbs.iter().copied().collect(),
            resources: resources.iter().copied().collect(),
        }
    }

    /// Whether the rule grants `verb` on `resource`.
    pub fn allows(&self, verb: Verb, resource: Resource) -> bool {
        self.verbs.contains(&verb) && self.resources.contains(&resource)
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = |words: Vec<&str>, all: usize| {
            if words.len() == all {
                "*".to_string()
            } else {
                words.join(",")
            }
        };
        write!(
            f,
            "{} on {}",
            list(
                self.verbs.iter().map(|v| v.word()).collect(),
                Verb::ALL.len()
            ),
            list(
                self.resources.iter().map(|r| r.word()).collect(),
                Resource::ALL.len()
            )
        )
    }
}

/// `"*"` or a list of words, for [`Rule`]'s fields.
mod every {
    use std::collections::BTreeSet;
    use std::str::FromStr;

    use serde::de::Error;
    use serde::{Deserialize, Deserializer, Serializer};

    pub trait Words: Copy + Ord + FromStr<Err = String> + 'static {
        const ALL: &'static [Self];
        fn word(self) -> &'static str;
    }

    impl Words for super::Verb {
        const ALL: &'static [Self] = super::Verb::ALL;
        fn word(self) -> &'static str {
            super::Verb::word(self)
        }
    }

    impl Words for super::Resource {
        const ALL: &'static [Self] = super::Resource::ALL;
        fn word(self) -> &'static str {
            super::Resource::word(self)
        }
    }

    pub fn serialize<S: Serializer, T: Words>(set: &BTreeSet<T>, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(set.iter().map(|w| w.word()))
    }

    pub fn deserialize<'de, D: Deserializer<'de>, T: Words>(d: D) -> Result<BTreeSet<T>, D::Error> {
        let words = Vec::<String>::deserialize(d)?;
        if words.is_empty() {
            return Err(D::Error::custom("the list is empty: name at least one"));
        }
        let mut set = BTreeSet::new();
        for word in words {
            if word == "*" {
                set.extend(T::ALL.iter().copied());
            } else {
                set.insert(T::from_str(&word).map_err(D::Error::custom)?);
            }
        }
        Ok(set)
    }
}

/// A named set of rules.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Role {
    /// What the role is for.
    #[serde(default)]
    pub description: String,
    /// What it grants.
    pub rules: Vec<Rule>,
}

impl Role {
    /// Whether the role grants `verb` on `resource`; the rule that does.
    pub fn rule_for(&self, verb: Verb, resource: Resource) -> Option<&Rule> {
        self.rules.iter().find(|r| r.allows(verb, resource))
    }
}

/// The built-in role with every permission.
pub const ADMIN: &str = "admin";

/// Why a role file was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RolesError {
    /// The TOML is malformed or names an unknown verb, resource or key.
    #[error("{file}: {message}")]
    Malformed {
        /// The file.
        file: String,
        /// What the parser said (with line and column).
        message: String,
    },
    /// A custom role reuses a built-in role's name.
    #[error(
        "{file}: role {role} is built in and cannot be redefined: give yours another name (built in: admin, edit, view, invoke)"
    )]
    Builtin {
        /// The file.
        file: String,
        /// The role.
        role: Name,
    },
    /// A role grants nothing.
    #[error(
        "{file}: role {role} has no rules: add rules = [{{ verbs = [...], resources = [...] }}]"
    )]
    Empty {
        /// The file.
        file: String,
        /// The role.
        role: Name,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RoleFile {
    roles: BTreeMap<Name, Role>,
}

/// The outcome of an authorization check, with its reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Allowed by this binding's rule.
    Allowed {
        /// The binding that allowed it.
        binding: Binding,
        /// The rule of its role that matched.
        rule: Rule,
    },
    /// Refused: nothing the principal holds grants it.
    Denied {
        /// The verb asked for.
        verb: Verb,
        /// On what.
        resource: Resource,
        /// Where.
        scope: Scope,
        /// The roles that would grant it there.
        granted_by: Vec<Name>,
    },
}

impl Decision {
    /// Whether the call may go ahead.
    pub fn allowed(&self) -> bool {
        matches!(self, Decision::Allowed { .. })
    }

    /// One sentence saying why, for `can-i` and for a 403.
    pub fn reason(&self, principal: &Principal) -> String {
        match self {
            Decision::Allowed { binding, rule } => {
                format!("role {} grants {rule}", binding)
            }
            Decision::Denied {
                verb,
                resource,
                scope,
                granted_by,
            } => {
                let held = if principal.bindings.is_empty() {
                    "no role".to_string()
                } else {
                    principal
                        .bindings
                        .iter()
                        .map(Binding::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                let grant = match granted_by.as_slice() {
                    [] => "no role grants it".to_string(),
                    [one] => format!("role {one} grants it"),
                    many => format!(
                        "roles {} grant it",
                        many.iter().map(Name::as_str).collect::<Vec<_>>().join(", ")
                    ),
                };
                format!(
                    "{principal} may not {verb} {resource} {scope}: that needs permission {verb} on {resource} {scope}, and {grant} (it holds {held})"
                )
            }
        }
    }
}

/// Every role a scheduler knows: the built-in ones and custom ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Roles {
    roles: BTreeMap<Name, Role>,
}

impl Default for Roles {
    fn default() -> Self {
        Roles::builtin()
    }
}

impl Roles {
    /// The built-in roles: `admin` (everything), `edit` (run and change
    /// apps, set secrets), `view` (read all but secrets) and `invoke`
    /// (invoke workers, nothing else).
    pub fn builtin() -> Roles {
        use Resource as R;
        use Verb as V;
        let workloads = [R::Apps, R::Pods, R::Logs, R::Events, R::Secrets, R::Dumps];
        let readable = [R::Apps, R::Pods, R::Logs, R::Events, R::Namespaces];
        let reading = [V::Get, V::List, V::Watch];
        let role = |description: &str, rules: Vec<Rule>| Role {
            description: description.into(),
            rules,
        };
        let roles = [
            (
                ADMIN,
                role(
                    "Everything, including tokens, quotas and the audit trail",
                    vec![Rule::new(V::ALL, R::ALL)],
                ),
            ),
            (
                "edit",
                role(
                    "Deploy, change, scale, invoke and delete apps; set and list secrets; read logs, events and core dumps",
                    vec![
                        Rule::new(
                            &[
                                V::Get,
                                V::List,
                                V::Watch,
                                V::Create,
                                V::Update,
                                V::Delete,
                                V::Invoke,
                                V::Scale,
                                V::Rollout,
                                V::Logs,
                                V::SecretsSet,
                                V::SecretsList,
                            ],
                            &workloads,
                        ),
                        Rule::new(&reading, &[R::Namespaces]),
                    ],
                ),
            ),
            (
                "view",
                role(
                    "Read apps, pods, logs, events and the namespace; no secrets, no changes",
                    vec![
                        Rule::new(&reading, &readable),
                        Rule::new(&[V::Logs], &[R::Logs]),
                    ],
                ),
            ),
            (
                "invoke",
                role(
                    "Invoke workers and nothing else",
                    vec![Rule::new(&[V::Invoke], &[R::Apps])],
                ),
            ),
        ];
        Roles {
            roles: roles
                .into_iter()
                .map(|(name, role)| (Name::trusted(name), role))
                .collect(),
        }
    }

    /// The built-in roles and those in a role file's `text`:
    ///
    /// ```toml
    /// [roles.deployer]
    /// description = "Ships apps, reads the rest"
    /// rules = [
    ///   { verbs = ["get", "list", "create", "update", "scale"], resources = ["apps"] },
    ///   { verbs = ["get", "list"], resources = ["pods", "events"] },
    /// ]
    /// ```
    pub fn with_custom(text: &str, file: &str) -> Result<Roles, RolesError> {
        let parsed: RoleFile = toml::from_str(text).map_err(|e| RolesError::Malformed {
            file: file.to_string(),
            message: e.to_string(),
        })?;
        let mut roles = Roles::builtin();
        for (name, role) in parsed.roles {
            if roles.roles.contains_key(&name) {
                return Err(RolesError::Builtin {
                    file: file.to_string(),
                    role: name,
                });
            }
            if role.rules.is_empty() {
                return Err(RolesError::Empty {
                    file: file.to_string(),
                    role: name,
                });
            }
            roles.roles.insert(name, role);
        }
        Ok(roles)
    }

    /// The role called `name`.
    pub fn get(&self, name: &Name) -> Option<&Role> {
        self.roles.get(name)
    }

    /// Every role, by name.
    pub fn iter(&self) -> impl Iterator<Item = (&Name, &Role)> {
        self.roles.iter()
    }

    /// May `principal` use `verb` on `resource` in `scope`? A binding of
    /// an unknown role grants nothing.
    pub fn decide(
        &self,
        principal: &Principal,
        verb: Verb,
        resource: Resource,
        scope: &Scope,
    ) -> Decision {
        for binding in principal.bindings.iter().filter(|b| b.covers(scope)) {
            if let Some(rule) = self
                .roles
                .get(&binding.role)
                .and_then(|role| role.rule_for(verb, resource))
            {
                return Decision::Allowed {
                    binding: binding.clone(),
                    rule: rule.clone(),
                };
            }
        }
        Decision::Denied {
            verb,
            resource,
            scope: scope.clone(),
            granted_by: self
                .roles
                .iter()
                .filter(|(_, role)| role.rule_for(verb, resource).is_some())
                .map(|(name, _)| name.clone())
                .collect(),
        }
    }

    /// May `granter` hand out `binding`? Only if it holds every permission
    /// the bound role grants, where the binding applies: nobody can mint a
    /// token stronger than their own.
    pub fn may_grant(&self, granter: &Principal, binding: &Binding) -> Result<(), String> {
        let Some(role) = self.roles.get(&binding.role) else {
            return Err(format!(
                "there is no role {}: the roles are {}",
                binding.role,
                self.roles
                    .keys()
                    .map(Name::as_str)
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        };
        let scope = binding.scope();
        for rule in &role.rules {
            for &verb in &rule.verbs {
                for &resource in &rule.resources {
                    let decision = self.decide(granter, verb, resource, &scope);
                    if !decision.allowed() {
                        return Err(format!(
                            "{granter} cannot grant role {binding}: it may not {verb} {resource} {scope} itself, and nobody can grant more than they hold"
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> Name {
        Name::new(s).unwrap_or_else(|e| unreachable!("{e}"))
    }

    fn holding(role: &str, namespace: Option<&str>) -> Principal {
        Principal {
            name: name("alice"),
            kind: PrincipalKind::User,
            bindings: vec![Binding {
                role: name(role),
                namespace: namespace.map(name),
            }],
        }
    }

    fn ns(s: &str) -> Scope {
        Scope::Namespace(name(s))
    }

    #[test]
    fn view_reads_but_does_not_change_and_names_who_would_grant() {
        let roles = Roles::builtin();
        let alice = holding("view", Some("team-a"));
        assert!(
            roles
                .decide(&alice, Verb::Get, Resource::Apps, &ns("team-a"))
                .allowed()
        );
        assert!(
            roles
                .decide(&alice, Verb::Logs, Resource::Logs, &ns("team-a"))
                .allowed()
        );
        let denied = roles.decide(&alice, Verb::Create, Resource::Apps, &ns("team-a"));
        assert!(!denied.allowed());
        let reason = denied.reason(&alice);
        assert!(
            reason.contains("needs permission create on apps in namespace team-a"),
            "{reason}"
        );
        assert!(reason.contains("roles admin, edit grant it"), "{reason}");
        assert!(
            reason.contains("holds view in namespace team-a"),
            "{reason}"
        );
        assert!(
            !roles
                .decide(&alice, Verb::SecretsList, Resource::Secrets, &ns("team-a"))
                .allowed()
        );
    }

    #[test]
    fn a_namespace_binding_stops_at_its_namespace() {
        let roles = Roles::builtin();
        let alice = holding("edit", Some("team-a"));
        assert!(
            roles
                .decide(&alice, Verb::Create, Resource::Apps, &ns("team-a"))
                .allowed()
        );
        assert!(
            !roles
                .decide(&alice, Verb::Create, Resource::Apps, &ns("team-b"))
                .allowed()
        );
        assert!(
            !roles
                .decide(&alice, Verb::List, Resource::Hosts, &Scope::Cluster)
                .allowed()
        );
        let admin = holding("admin", Some("team-a"));
        assert!(
            !roles
                .decide(&admin, Verb::Create, Resource::Namespaces, &Scope::Cluster)
                .allowed()
        );
        let root = holding("admin", None);
        assert!(
            roles
                .decide(&root, Verb::Delete, Resource::Tokens, &ns("team-z"))
                .allowed()
        );
        assert!(
            roles
                .decide(&root, Verb::List, Resource::Hosts, &Scope::Cluster)
                .allowed()
        );
    }

    #[test]
    fn invoke_invokes_and_nothing_else() {
        let roles = Roles::builtin();
        let bot = holding("invoke", Some("team-a"));
        for &verb in Verb::ALL {
            for &resource in Resource::ALL {
                let allowed = roles.decide(&bot, verb, resource, &ns("team-a")).allowed();
                assert_eq!(
                    allowed,
                    (verb, resource) == (Verb::Invoke, Resource::Apps),
                    "{verb} {resource}"
                );
            }
        }
    }

    #[test]
    fn nobody_grants_more_than_they_hold() {
        let roles = Roles::builtin();
        let ns_admin = holding("admin", Some("team-a"));
        let edit_a = Binding {
            role: name("edit"),
            namespace: Some(name("team-a")),
        };
        assert_eq!(roles.may_grant(&ns_admin, &edit_a), Ok(()));
        let edit_b = Binding {
            role: name("edit"),
            namespace: Some(name("team-b")),
        };
        assert!(roles.may_grant(&ns_admin, &edit_b).is_err());
        let cluster_view = Binding {
            role: name("view"),
            namespace: None,
        };
        let why = roles
            .may_grant(&ns_admin, &cluster_view)
            .err()
            .unwrap_or_default();
        assert!(why.contains("cannot grant role view cluster-wide"), "{why}");
        let editor = holding("edit", Some("team-a"));
        let admin_a = Binding {
            role: name("admin"),
            namespace: Some(name("team-a")),
        };
        assert!(roles.may_grant(&editor, &admin_a).is_err());
        let unknown = Binding {
            role: name("root"),
            namespace: None,
        };
        let why = roles
            .may_grant(&holding("admin", None), &unknown)
            .err()
            .unwrap_or_default();
        assert!(why.contains("there is no role root"), "{why}");
    }

    #[test]
    fn custom_roles_come_from_toml_and_may_use_wildcards() {
        let roles = Roles::with_custom(
            r#"
[roles.deployer]
description = "ships apps"
rules = [
  { verbs = ["get", "list", "create", "update"], resources = ["apps"] },
  { verbs = ["*"], resources = ["events"] },
]
"#,
            "roles.toml",
        )
        .unwrap_or_else(|e| unreachable!("{e}"));
        let bob = holding("deployer", Some("team-a"));
        assert!(
            roles
                .decide(&bob, Verb::Update, Resource::Apps, &ns("team-a"))
                .allowed()
        );
        assert!(
            roles
                .decide(&bob, Verb::Delete, Resource::Events, &ns("team-a"))
                .allowed()
        );
        assert!(
            !roles
                .decide(&bob, Verb::Delete, Resource::Apps, &ns("team-a"))
                .allowed()
        );
        let Decision::Allowed { rule, .. } =
            roles.decide(&bob, Verb::Get, Resource::Events, &ns("team-a"))
        else {
            unreachable!("allowed above")
        };
        assert_eq!(rule.to_string(), "* on events");
    }

    #[test]
    fn bad_role_files_say_what_is_wrong() {
        let err = |text: &str| {
            Roles::with_custom(text, "roles.toml")
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default()
        };
        let unknown = err("[roles.x]\nrules = [{ verbs = [\"gett\"], resources = [\"apps\"] }]\n");
        assert!(unknown.contains("unknown verb \"gett\""), "{unknown}");
        assert!(unknown.contains("line 2"), "{unknown}");
        let builtin =
            err("[roles.admin]\nrules = [{ verbs = [\"get\"], resources = [\"apps\"] }]\n");
        assert!(builtin.contains("built in"), "{builtin}");
        let empty = err("[roles.x]\nrules = []\n");
        assert!(empty.contains("has no rules"), "{empty}");
        let key = err("[roles.x]\nrules = []\nextra = 1\n");
        assert!(key.contains("extra"), "{key}");
    }
}
