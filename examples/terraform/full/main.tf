# Every argument of docker_registry in one place: volume storage, ACME by
# DNS-01, a bcrypt-only user, firewall CIDRs, droplet tags and timeouts.

terraform {
  required_providers {
    docker = {
      source = "anchorage/docker"
    }
  }
}

variable "fqdn" {
  description = "The registry's name; its domain must be managed in this DigitalOcean account."
  type        = string
  default     = "registry.example.com"
}

variable "region" {
  type    = string
  default = "ams3"
}

variable "admin_email" {
  description = "Contact of the ACME account (Let's Encrypt sends expiry notices here)."
  type        = string
  default     = "hostmaster@example.com"
}

variable "admin_password" {
  description = "Password of `admin` (push), 12 characters or more."
  type        = string
  sensitive   = true
}

variable "deploy_password_bcrypt" {
  description = "bcrypt hash of the `deploy` user's password (e.g. `htpasswd -nbB deploy <password>`), so no plaintext lands in state."
  type        = string
  sensitive   = true
}

variable "ssh_key_fingerprints" {
  description = "Fingerprints of DigitalOcean SSH keys that may log in as root."
  type        = list(string)
  default     = []
}

# The provider reads DIGITALOCEAN_TOKEN from the environment; see
# examples/provider/provider.tf for every setting.
provider "docker" {
  http_retry_max      = 6
  requests_per_second = 5
}

resource "docker_registry" "full" {
  name               = "registry"
  region             = var.region
  size               = "s-2vcpu-4gb"
  image              = "debian-12-x64"
  droplet_generation = 1 # bump to get a fresh droplet with the same storage
  fqdn               = var.fqdn

  ssh_key_fingerprints = var.ssh_key_fingerprints
  ssh_allowed_cidrs    = ["198.51.100.0/24", "2001:db8::/32"]
  tags                 = ["registry", "production"]

  users = {
    admin = {
      password = var.admin_password
      access   = "push"
    }
    deploy = {
      password_bcrypt = var.deploy_password_bcrypt
      access          = "pull"
    }
  }
  anonymous_pull = false

  tls {
    source            = "acme"
    email             = var.admin_email
    challenge         = "dns-01"
    key_type          = "ecdsa-p256"
    renew_before_days = 30
    revoke_on_destroy = false
    caa               = true

    # A certificate you already have instead of ACME (leave out email,
    # challenge, key_type, caa):
    # source          = "provided"
    # certificate_pem = file("registry.example.com.fullchain.pem")
    # private_key_pem = file("registry.example.com.key")
  }

  # A volume outlives the droplet; destroy keeps it while it holds images
  # unless force_destroy is true.
  storage {
    backend       = "volume"
    size_gib      = 250
    force_destroy = false
  }

  # Spaces instead of a volume (the provider needs spaces_access_id and
  # spaces_secret_key):
  # storage {
  #   backend         = "spaces"
  #   bucket          = "example-registry-images"
  #   spaces_redirect = true
  # }

  timeouts {
    create = "30m"
    update = "30m"
    delete = "15m"
  }
}

output "url" {
  value = docker_registry.full.url
}

output "ipv4_address" {
  value = docker_registry.full.ipv4_address
}

output "ipv6_address" {
  value = docker_registry.full.ipv6_address
}

output "certificate_not_after" {
  value = docker_registry.full.certificate_not_after
}

output "volume_id" {
  value = docker_registry.full.volume_id
}

output "host_key_fingerprint" {
  value = docker_registry.full.host_key_fingerprint
}

output "docker_config_json" {
  description = "A docker config.json with the admin's credentials."
  value       = docker_registry.full.docker_config_json
  sensitive   = true
}
