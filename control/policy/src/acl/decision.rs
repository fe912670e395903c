//! What the [`Authorizer`](super::Authorizer) answers, and Consul's text for a denial.
//!
//! A [`Decision`] borrows the name asked about and the token's AccessorID, so deciding never
//! allocates; [`Decision::check`] turns a denial into an owned [`PermissionDenied`] error whose
//! `Display` is Consul's message byte for byte (`acl/errors.go`, `PermissionDeniedError`):
//!
//! ```text
//! Permission denied: token with AccessorID '<id>' lacks permission 'service:write' on "db"
//! Permission denied: token with AccessorID '<id>' lacks permission 'operator:read'
//! Permission denied: anonymous token lacks permission 'node:read' on "n1". The anonymous token is used implicitly when a request does not specify a token.
//! ```

use std::fmt;

use super::model::ANONYMOUS_TOKEN_ACCESSOR_ID;
use super::rules::AccessLevel;
use crate::intentions::DefaultPolicy;

/// The resource a permission is about, spelled as Consul spells it in denial messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Resource {
    /// `service`: catalog registration and discovery of a service.
    Service,
    /// `intention`: intentions whose destination is a service (the `intentions` field of a
    /// service rule; Consul names the resource in the singular).
    Intention,
    /// `node`: catalog nodes.
    Node,
    /// `agent`: a node's agent API.
    Agent,
    /// `operator`: cluster operations.
    Operator,
    /// `acl`: the ACL system.
    Acl,
    /// `mesh`: mesh-wide configuration.
    Mesh,
}

impl Resource {
    /// Consul's name: `service`, `intention`, `node`, `agent`, `operator`, `acl`, `mesh`.
    pub fn as_str(self) -> &'static str {
        match self {
            Resource::Service => "service",
            Resource::Intention => "intention",
            Resource::Node => "node",
            Resource::Agent => "agent",
            Resource::Operator => "operator",
            Resource::Acl => "acl",
            Resource::Mesh => "mesh",
        }
    }
}

/// The access asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Access {
    /// Read.
    Read,
    /// Modify (implies read).
    Write,
}

impl Access {
    /// `read` or `write`.
    pub fn as_str(self) -> &'static str {
        match self {
            Access::Read => "read",
            Access::Write => "write",
        }
    }

    /// Whether a rule of `level` grants this access: `write` grants both, `read` only read,
    /// `deny` nothing (Consul's `enforce`; a matching rule decides, it never falls through).
    pub fn granted_by(self, level: AccessLevel) -> bool {
        match level {
            AccessLevel::Write => true,
            AccessLevel::Read => self == Access::Read,
            AccessLevel::Deny => false,
        }
    }
}

/// A permission: a resource and an access, displayed `service:write`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Permission {
    /// The resource.
    pub resource: Resource,
    /// The access.
    pub access: Access,
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.resource.as_str(), self.access.as_str())
    }
}

/// Which rule decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// An exact rule (`service "db"`) for the name.
    Exact {
        /// The rule's (merged) level.
        level: AccessLevel,
    },
    /// The longest matching prefix rule (`service_prefix "d"`); the prefix is the first `len`
    /// bytes of the name ([`Decision::matched_prefix`]).
    Prefix {
        /// Length in bytes of the matched prefix.
        len: usize,
        /// The rule's (merged) level.
        level: AccessLevel,
    },
    /// The scalar rule of the resource (`operator = "read"`).
    Scalar {
        /// The rule's (merged) level.
        level: AccessLevel,
    },
    /// No `mesh` rule, so the `operator` rule decided (Consul's `MeshRead`/`MeshWrite`).
    OperatorFallback {
        /// The operator rule's (merged) level.
        level: AccessLevel,
    },
    /// No rule matched; the ACL default policy decided.
    Default(DefaultPolicy),
}

/// The answer to one question put to an [`Authorizer`](super::Authorizer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision<'a> {
    /// Whether the permission is granted.
    pub allowed: bool,
    /// What was asked.
    pub permission: Permission,
    /// The service, node or agent name asked about; `None` for scalar resources.
    pub name: Option<&'a str>,
    /// Which rule decided.
    pub reason: Reason,
    /// The token's AccessorID, for the denial message.
    pub accessor_id: &'a str,
}

impl<'a> Decision<'a> {
    /// Whether the permission is granted.
    pub fn is_allowed(&self) -> bool {
        self.allowed
    }

    /// The prefix of the rule that decided, when a prefix rule did.
    pub fn matched_prefix(&self) -> Option<&'a str> {
        match (self.reason, self.name) {
            (Reason::Prefix { len, .. }, Some(name)) => name.get(..len),
            _ => None,
        }
    }

    /// The denial as an error, or `None` when allowed.
    pub fn denial(&self) -> Option<PermissionDenied> {
        (!self.allowed).then(|| PermissionDenied {
            accessor_id: self.accessor_id.to_string(),
            permission: self.permission,
            name: self.name.map(str::to_string),
        })
    }

    /// `Ok(())` when allowed, else the [`PermissionDenied`] error.
    pub fn check(self) -> Result<(), PermissionDenied> {
        match self.denial() {
            None => Ok(()),
            Some(e) => Err(e),
        }
    }
}

/// A denied permission; `Display` renders Consul's exact message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct PermissionDenied {
    /// AccessorID of the token that lacks the permission.
    pub accessor_id: String,
    /// The permission it lacks.
    pub permission: Permission,
    /// The name it lacks it on; `None` (or empty) for scalar resources.
    pub name: Option<String>,
}

impl fmt::Display for PermissionDenied {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let anonymous = self.accessor_id == ANONYMOUS_TOKEN_ACCESSOR_ID;
        f.write_str("Permission denied: ")?;
        if anonymous {
            f.write_str("anonymous token")?;
        } else {
            write!(f, "token with AccessorID '{}'", self.accessor_id)?;
        }
        write!(f, " lacks permission '{}'", self.permission)?;
        if let Some(name) = self.name.as_deref().filter(|n| !n.is_empty()) {
            write!(f, " on {}", GoQuoted(name))?;
        }
        if anonymous {
            f.write_str(
                ". The anonymous token is used implicitly when a request does not specify a token.",
            )?;
        }
        Ok(())
    }
}

/// A string as Go's `%q` prints it (Consul formats the resource name that way): in double
/// quotes, with `"` and `\` escaped and control characters as escapes.
struct GoQuoted<'a>(&'a str);

impl fmt::Display for GoQuoted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use fmt::Write;
        f.write_char('"')?;
        for c in self.0.chars() {
            match c {
                '"' => f.write_str("\\\"")?,
                '\\' => f.write_str("\\\\")?,
                '\n' => f.write_str("\\n")?,
                '\r' => f.write_str("\\r")?,
                '\t' => f.write_str("\\t")?,
                '\u{7}' => f.write_str("\\a")?,
                '\u{8}' => f.write_str("\\b")?,
                '\u{c}' => f.write_str("\\f")?,
                '\u{b}' => f.write_str("\\v")?,
                c if (c as u32) < 0x20 || c == '\u{7f}' => write!(f, "\\x{:02x}", c as u32)?,
                c if c.is_control() => write!(f, "\\u{:04x}", c as u32)?,
                c => f.write_char(c)?,
            }
        }
        f.write_char('"')
    }
}
