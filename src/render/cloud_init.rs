//! Cloud-init user data for the droplet's first boot: authorise the provider's key for root and
//! install the throwaway host key the droplet is born with. Nothing else, never a password or
//! token: user data stays readable on the droplet (the metadata service), so the provider moves
//! the droplet to the registry's own host key right after its first connection.

use serde::Serialize;

use crate::secret::Secret;

#[derive(Serialize)]
struct CloudConfig<'a> {
    // Root is the account the provider converges as (DO images allow root key logins); with
    // `true` cloud-init would prefix our key with a "log in as debian" command.
    disable_root: bool,
    ssh_pwauth: bool,
    // No default user: with none, cloud-init gives the keys to root only, rather than also
    // creating a `debian` account with the same key and passwordless sudo.
    users: [(); 0],
    ssh_authorized_keys: [&'a str; 1],
    // Remove the image's host keys and generate none: the only host key is the born one, which
    // the provider pins when it first connects (no trust on first use), and replaces.
    ssh_deletekeys: bool,
    ssh_genkeytypes: [(); 0],
    ssh_keys: SshKeys<'a>,
}

#[derive(Serialize)]
struct SshKeys<'a> {
    ed25519_private: &'a Secret,
    ed25519_public: &'a str,
}

/// `#cloud-config` followed by JSON (YAML accepts JSON, and serde_json escapes every value).
/// `host_key_ed25519_*` is the droplet's born key, never the registry's own.
pub fn user_data(
    management_pubkey: &str,
    host_key_ed25519_private: &Secret,
    host_key_ed25519_public: &str,
) -> String {
    let config = CloudConfig {
        disable_root: false,
        ssh_pwauth: false,
        users: [],
        ssh_authorized_keys: [management_pubkey.trim()],
        ssh_deletekeys: true,
        ssh_genkeytypes: [],
        ssh_keys: SshKeys {
            ed25519_private: host_key_ed25519_private,
            ed25519_public: host_key_ed25519_public.trim(),
        },
    };
    format!(
        "#cloud-config\n{}\n",
        serde_json::to_string_pretty(&config).expect("cloud-config serializes")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::golden::assert_golden;

    const HOST_PRIVATE: &str = "-----BEGIN OPENSSH PRIVATE KEY-----\n\
        b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\n\
        -----END OPENSSH PRIVATE KEY-----\n";

    #[test]
    fn renders_root_key_and_pinned_host_key() {
        let text = user_data(
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIManagement provider\n",
            &Secret::new(HOST_PRIVATE),
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHost",
        );
        assert_golden("user-data.yml", &text);
        let (first, json) = text.split_once('\n').unwrap();
        assert_eq!(first, "#cloud-config");
        let v: serde_json::Value = serde_json::from_str(json).unwrap();
        assert_eq!(v["disable_root"], false);
        assert_eq!(v["ssh_pwauth"], false);
        assert_eq!(v["ssh_deletekeys"], true);
        assert_eq!(v["ssh_genkeytypes"], serde_json::json!([]));
        assert_eq!(v["users"], serde_json::json!([]));
        assert_eq!(
            v["ssh_authorized_keys"][0],
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIManagement provider"
        );
        assert_eq!(v["ssh_keys"]["ed25519_private"], HOST_PRIVATE);
        for forbidden in ["password", "passwd", "chpasswd", "token"] {
            assert!(!text.contains(forbidden), "user data mentions {forbidden}");
        }
    }
}
