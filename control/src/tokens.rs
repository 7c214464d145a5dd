//! Bearer tokens: a file of `NAME ROLE SECRET` lines.

use std::path::Path;

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Change tables and read everything.
    Admin,
    /// Subscribe, report and read status.
    Proxy,
}

/// A known token.
#[derive(Debug, Clone)]
pub struct Token {
    /// Who it is, recorded as the actor of changes.
    pub name: String,
    /// What it may do.
    pub role: Role,
    secret: String,
}

/// All tokens of the file.
#[derive(Debug, Clone, Default)]
pub struct Tokens {
    tokens: Vec<Token>,
}

/// Why a request is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    /// No token, or an unknown one: 401.
    Unauthenticated,
    /// A known token without the role: 403.
    Forbidden,
}

impl Tokens {
    /// Reads a tokens file.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read tokens {}: {e}", path.display()))?;
        Self::parse(&text).map_err(|e| anyhow::anyhow!("tokens {}: {e}", path.display()))
    }

    /// Parses `NAME ROLE SECRET` lines; `#` starts a comment.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let mut tokens = Vec::new();
        for (number, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [name, role, secret] = fields[..] else {
                anyhow::bail!(
                    "line {}: expected `NAME ROLE SECRET`, found {} fields",
                    number + 1,
                    fields.len()
                );
            };
            let role = match role {
                "admin" => Role::Admin,
                "proxy" => Role::Proxy,
                other => anyhow::bail!(
                    "line {}: role must be `admin` or `proxy`, not {other:?}",
                    number + 1
                ),
            };
            anyhow::ensure!(
                secret.len() >= 16,
                "line {}: the secret of {name:?} is shorter than 16 characters",
                number + 1
            );
            anyhow::ensure!(
                tokens.iter().all(|t: &Token| t.secret != secret),
                "line {}: the secret of {name:?} is also another token's",
                number + 1
            );
            tokens.push(Token {
                name: name.to_owned(),
                role,
                secret: secret.to_owned(),
            });
        }
        anyhow::ensure!(!tokens.is_empty(), "no token");
        Ok(Self { tokens })
    }

    /// The token of an `Authorization` header value, if it is allowed `needed`
    /// (an admin token may do everything a proxy token may).
    pub fn check(&self, authorization: Option<&[u8]>, needed: Role) -> Result<&Token, Denied> {
        let presented = authorization
            .and_then(|value| value.strip_prefix(b"Bearer "))
            .ok_or(Denied::Unauthenticated)?;
        let token = self
            .tokens
            .iter()
            .find(|t| same_secret(t.secret.as_bytes(), presented))
            .ok_or(Denied::Unauthenticated)?;
        match (needed, token.role) {
            (Role::Proxy, _) | (Role::Admin, Role::Admin) => Ok(token),
            (Role::Admin, Role::Proxy) => Err(Denied::Forbidden),
        }
    }
}

/// Compares without stopping at the first different byte, so the time taken
/// does not tell an attacker how much of a guess was right.
fn same_secret(expected: &[u8], presented: &[u8]) -> bool {
    if expected.len() != presented.len() {
        return false;
    }
    expected
        .iter()
        .zip(presented)
        .fold(0u8, |acc, (a, b)| acc | (a ^ b))
        == 0
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const FILE: &str =
        "# release team\nalice admin 0123456789abcdef\n\nedge proxy fedcba9876543210 # gateways\n";

    #[test]
    fn roles_are_enforced() {
        let tokens = Tokens::parse(FILE).unwrap();
        let admin = Some(&b"Bearer 0123456789abcdef"[..]);
        let proxy = Some(&b"Bearer fedcba9876543210"[..]);
        assert_eq!(tokens.check(admin, Role::Admin).unwrap().name, "alice");
        assert_eq!(tokens.check(admin, Role::Proxy).unwrap().name, "alice");
        assert_eq!(tokens.check(proxy, Role::Proxy).unwrap().name, "edge");
        assert_eq!(
            tokens.check(proxy, Role::Admin).unwrap_err(),
            Denied::Forbidden
        );
        assert_eq!(
            tokens.check(None, Role::Proxy).unwrap_err(),
            Denied::Unauthenticated
        );
        assert_eq!(
            tokens
                .check(Some(b"Bearer 0123456789abcdeX"), Role::Proxy)
                .unwrap_err(),
            Denied::Unauthenticated
        );
        assert_eq!(
            tokens
                .check(Some(b"0123456789abcdef"), Role::Proxy)
                .unwrap_err(),
            Denied::Unauthenticated
        );
    }

    #[test]
    fn bad_lines_name_their_number() {
        let error = Tokens::parse("alice admin\n").unwrap_err().to_string();
        assert!(error.contains("line 1"), "{error}");
        let error = Tokens::parse("a admin 0123456789abcdef\nb root 0123456789abcdeg\n")
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("line 2") && error.contains("root"),
            "{error}"
        );
        let error = Tokens::parse("a admin short\n").unwrap_err().to_string();
        assert!(error.contains("shorter"), "{error}");
        assert!(Tokens::parse("# nothing\n").is_err());
    }
}
