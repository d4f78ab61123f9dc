//! The two htpasswd files the token endpoint reads per token request: all users (checked by
//! auth_basic) and push users (granted push). Lines are `name:$2y$...`, sorted by name.

use std::collections::BTreeMap;

use super::{Access, RenderError, User};
use crate::secret::Secret;

/// nginx runs crypt(3) inside its event loop on every token request (one or two per docker
/// operation), stalling every other client of that worker meanwhile: cost 10 costs ~60 ms of a
/// droplet's CPU, cost 8 (~15 ms) keeps an offline attack on a stolen file expensive while
/// keeping logins and pulls quick.
pub const BCRYPT_COST: u32 = 8;

/// A `$2y$` bcrypt hash of `password`, the variant Debian's libcrypt (and Apache's htpasswd)
/// writes and nginx verifies.
pub fn hash_password(password: &Secret) -> Result<String, RenderError> {
    bcrypt::hash_with_result(password.expose(), BCRYPT_COST)
        .map(|parts| parts.format_for_version(bcrypt::Version::TwoY))
        // bcrypt's error never holds the password; it names the cost or the length.
        .map_err(|e| RenderError::Hash(e.to_string()))
}

/// Whether `password` matches a hash from `hash_password` (lets the resource layer keep an
/// existing hash, and thus the file's digest, when the password did not change).
pub fn password_matches(password: &Secret, bcrypt_hash: &str) -> bool {
    bcrypt::verify(password.expose(), bcrypt_hash).unwrap_or(false)
}

/// Every user: the file nginx checks a token request's password against.
pub fn htpasswd(users: &[User]) -> Result<String, RenderError> {
    render(users, |_| true)
}

/// Push users only: the token endpoint grants push and delete to the names listed.
pub fn htpasswd_push(users: &[User]) -> Result<String, RenderError> {
    render(users, |u| u.access == Access::Push)
}

fn render(users: &[User], keep: impl Fn(&User) -> bool) -> Result<String, RenderError> {
    let mut sorted = BTreeMap::new();
    for user in users {
        validate(user)?;
        if sorted.insert(user.name.as_str(), user).is_some() {
            return Err(RenderError::DuplicateUser(user.name.clone()));
        }
    }
    Ok(sorted
        .values()
        .filter(|u| keep(u))
        .map(|u| format!("{}:{}\n", u.name, u.bcrypt_hash))
        .collect())
}

fn validate(user: &User) -> Result<(), RenderError> {
    // A ':' or newline in a name would let one entry forge another user's line.
    if user.name.is_empty() || user.name.chars().any(|c| c == ':' || c.is_control()) {
        return Err(RenderError::InvalidUserName(user.name.clone()));
    }
    let hash = &user.bcrypt_hash;
    let prefix_ok = ["$2y$", "$2b$", "$2a$"].iter().any(|p| hash.starts_with(p));
    // 60 characters: `$2y$` + 2-digit cost + `$` + 53 characters of salt and digest.
    let shape_ok = hash.len() == 60
        && hash
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "$./".contains(c));
    if !prefix_ok || !shape_ok {
        return Err(RenderError::InvalidHash(user.name.clone()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::fixtures;
    use crate::render::golden::assert_golden;

    #[test]
    fn all_users_sorted() {
        let text = htpasswd(&fixtures::users()).unwrap();
        assert_golden("htpasswd", &text);
        let names: Vec<_> = text.lines().map(|l| l.split(':').next().unwrap()).collect();
        assert_eq!(names, ["alice", "ci"]);
    }

    #[test]
    fn push_file_holds_only_push_users() {
        let text = htpasswd_push(&fixtures::users()).unwrap();
        assert_golden("htpasswd-push", &text);
        assert!(text.starts_with("ci:$2y$"));
        assert!(!text.contains("alice"));
    }

    #[test]
    fn order_of_input_does_not_change_output() {
        let mut users = fixtures::users();
        let a = htpasswd(&users).unwrap();
        users.reverse();
        assert_eq!(a, htpasswd(&users).unwrap());
    }

    #[test]
    fn no_users_gives_empty_files() {
        assert_eq!(htpasswd(&[]).unwrap(), "");
        assert_eq!(htpasswd_push(&[]).unwrap(), "");
    }

    #[test]
    fn forged_lines_are_refused() {
        let mut users = fixtures::users();
        users[0].name = "x:y".into();
        assert!(matches!(
            htpasswd(&users),
            Err(RenderError::InvalidUserName(_))
        ));
        let mut users = fixtures::users();
        users[0].name = "bob\nmallory".into();
        assert!(htpasswd(&users).is_err());
        let mut users = fixtures::users();
        users[1].bcrypt_hash = "plaintext".into();
        assert!(matches!(htpasswd(&users), Err(RenderError::InvalidHash(_))));
        let mut users = fixtures::users();
        users[1].name = users[0].name.clone();
        assert!(matches!(
            htpasswd(&users),
            Err(RenderError::DuplicateUser(_))
        ));
    }

    #[test]
    fn hashes_are_2y_and_verify() {
        let pw = Secret::new("correct horse battery staple");
        let hash = hash_password(&pw).unwrap();
        assert!(hash.starts_with("$2y$08$"), "{hash}");
        assert_eq!(hash.len(), 60);
        assert!(password_matches(&pw, &hash));
        assert!(!password_matches(&Secret::new("wrong"), &hash));
        let user = User {
            name: "u".into(),
            bcrypt_hash: hash,
            access: Access::Pull,
        };
        assert!(htpasswd(&[user]).is_ok());
    }
}
