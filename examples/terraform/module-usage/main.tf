# Calling modules/registry the way the old terraform-digitalocean-docker-registry
# module was called: only `source` changed.

terraform {
  required_providers {
    docker = {
      source = "anchorage/docker"
    }
  }
}

variable "admin_password" {
  type      = string
  sensitive = true
}

variable "ssh_key_fingerprint" {
  type = string
}

variable "ci_password_bcrypt" {
  description = "bcrypt hash of the `ci` user's password, e.g. from `htpasswd -nbB ci <password>`."
  type        = string
  sensitive   = true
}

# The old module's Spaces keys: they create and manage the bucket.
variable "space_key" {
  type      = string
  default   = ""
  sensitive = true
}

variable "space_secret" {
  type      = string
  default   = ""
  sensitive = true
}

variable "registry_http_secret" {
  type      = string
  default   = ""
  sensitive = true
}

provider "docker" {}

module "registry" {
  source = "../modules/registry"

  fqdn                = "registry.example.com"
  region              = "ams3"
  droplet_name        = "docker-registry"
  ssh_key_fingerprint = var.ssh_key_fingerprint
  admin_password      = var.admin_password
  admin_email         = "hostmaster@example.com"
  space_name          = "example-registry-images"
  space_key           = var.space_key
  space_secret        = var.space_secret

  registry_http_secret = var.registry_http_secret

  extra_users = {
    ci = {
      password_bcrypt = var.ci_password_bcrypt
    }
  }
}

output "url" {
  value = module.registry.url
}

output "docker_config_json" {
  value     = module.registry.docker_config_json
  sensitive = true
}
