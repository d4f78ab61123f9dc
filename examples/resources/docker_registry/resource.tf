variable "admin_password" {
  type      = string
  sensitive = true
}

variable "ci_password_bcrypt" {
  description = "bcrypt hash of the CI user's password, e.g. from `htpasswd -nbB ci <password>`."
  type        = string
  sensitive   = true
}

resource "docker_registry" "example" {
  name   = "registry"
  region = "ams3"
  size   = "s-1vcpu-2gb"
  fqdn   = "registry.example.com" # example.com must be a domain in this DigitalOcean account

  ssh_key_fingerprints = ["3b:16:bf:e4:8b:00:8b:b8:59:8c:a9:d3:f0:19:45:fa"]
  ssh_allowed_cidrs    = ["203.0.113.0/24"]
  tags                 = ["registry"]

  users = {
    # A plaintext password is hashed by the provider; it also feeds docker_config_json.
    admin = {
      password = var.admin_password
      access   = "push"
    }
    # A bcrypt hash keeps the plaintext out of state.
    ci = {
      password_bcrypt = var.ci_password_bcrypt
      access          = "pull"
    }
  }

  tls {
    source    = "acme"
    email     = "hostmaster@example.com"
    challenge = "dns-01"
    key_type  = "ecdsa-p256"
  }

  storage {
    backend  = "volume"
    size_gib = 100
  }

  timeouts {
    create = "30m"
    update = "20m"
    delete = "10m"
  }
}

output "registry_url" {
  value = docker_registry.example.url
}
