# One docker_registry in place of the old module's droplet, A record, cloud-init
# script and docker-compose: the provider converges the droplet over SSH.

locals {
  admin = {
    admin = {
      password        = var.admin_password
      password_bcrypt = null
      access          = "push"
    }
  }
}

resource "docker_registry" "this" {
  name   = var.droplet_name
  region = var.region
  size   = var.size
  fqdn   = var.fqdn

  ssh_key_fingerprints = [var.ssh_key_fingerprint]
  tags                 = var.tags

  # An extra user called `admin` would silently replace the module's admin,
  # so the admin is merged last.
  users = merge(var.extra_users, local.admin)

  tls {
    source = "acme"
    email  = var.admin_email
  }

  storage {
    backend = var.space_name == "" ? "droplet" : "spaces"
    bucket  = var.space_name == "" ? null : var.space_name
  }
}

# Warnings, not errors, so an unchanged caller of the old module still applies.
check "ignored_inputs" {
  assert {
    condition     = var.space_key == "" && var.space_secret == ""
    error_message = "space_key and space_secret are ignored: set spaces_access_id and spaces_secret_key in the provider \"docker\" block (or SPACES_ACCESS_KEY_ID and SPACES_SECRET_ACCESS_KEY) instead."
  }
  assert {
    condition     = var.registry_http_secret == ""
    error_message = "registry_http_secret is ignored: the provider generates the registry's http secret and keeps it in state."
  }
}
