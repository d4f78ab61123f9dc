# The README's quickstart: one registry on localocean, with a self-signed CA,
# an admin who may push and a reader who may only pull. scripts/quickstart
# passes api_endpoint, token and the passwords as TF_VAR_* variables.

terraform {
  required_providers {
    docker = {
      source = "anchorage/docker"
    }
  }
}

variable "api_endpoint" {
  description = "Base URL of the DigitalOcean API; localocean's, printed by `localocean up`."
  type        = string
}

variable "token" {
  description = "API token; localocean's, printed by `localocean up`."
  type        = string
  sensitive   = true
}

variable "fqdn" {
  description = "The registry's name; its domain is created in localocean by the quickstart."
  type        = string
  default     = "registry.quickstart.test"
}

variable "admin_password" {
  description = "Password of `admin` (push). 12 characters or more; the quickstart generates one."
  type        = string
  sensitive   = true
}

variable "reader_password" {
  description = "Password of `reader` (pull only). 12 characters or more; the quickstart generates one."
  type        = string
  sensitive   = true
}

provider "docker" {
  token        = var.token
  api_endpoint = var.api_endpoint
}

resource "docker_registry" "quickstart" {
  name   = "quickstart-registry"
  region = "nyc3"
  fqdn   = var.fqdn

  users = {
    admin = {
      password = var.admin_password
      access   = "push"
    }
    reader = {
      password = var.reader_password
      access   = "pull"
    }
  }

  # localocean has no public CA, so the registry gets its own CA: trust it with
  # the ca_certificate_pem output.
  tls {
    source = "self_signed"
  }
}

output "url" {
  value = docker_registry.quickstart.url
}

output "ipv4_address" {
  value = docker_registry.quickstart.ipv4_address
}

output "ca_certificate_pem" {
  description = "Put this in /etc/docker/certs.d/<fqdn>/ca.crt (or pass it to skopeo with --cert-dir)."
  value       = docker_registry.quickstart.ca_certificate_pem
}

output "host_key_fingerprint" {
  description = "Compare with what `ssh root@<ipv4_address>` shows on first login."
  value       = docker_registry.quickstart.host_key_fingerprint
}
