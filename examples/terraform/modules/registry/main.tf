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
  replicas             = var.replicas

  # The old module's default was "": empty means "generate one" (kept in state).
  http_secret = var.registry_http_secret == "" ? null : var.registry_http_secret

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
    # The old module's Spaces keys manage the bucket; without them, the provider's keys do.
    spaces_access_id  = var.space_name == "" || var.space_key == "" ? null : var.space_key
    spaces_secret_key = var.space_name == "" || var.space_secret == "" ? null : var.space_secret
  }
}
