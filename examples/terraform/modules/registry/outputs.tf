output "url" {
  description = "`https://<fqdn>`."
  value       = docker_registry.this.url
}

output "fqdn" {
  description = "The registry's name (an output of the old module)."
  value       = docker_registry.this.fqdn
}

output "ip" {
  description = "Public IPv4 address of the droplet (the old module's name for `ipv4_address`)."
  value       = docker_registry.this.ipv4_address
}

output "ipv4_address" {
  description = "Public IPv4 address of the droplet."
  value       = docker_registry.this.ipv4_address
}

output "ipv6_address" {
  description = "Public IPv6 address of the droplet, when it has one."
  value       = docker_registry.this.ipv6_address
}

output "droplet_id" {
  description = "Id of the droplet that serves the registry."
  value       = docker_registry.this.droplet_id
}

output "host_key_fingerprint" {
  description = "SSH host key fingerprint of the droplet; compare it on your first `ssh root@...`."
  value       = docker_registry.this.host_key_fingerprint
}

output "certificate_not_after" {
  description = "When the registry's certificate expires (RFC 3339); the provider renews it ahead."
  value       = docker_registry.this.certificate_not_after
}

output "docker_config_json" {
  description = "A docker `config.json` with credentials for `admin` (and every extra user with a plaintext password)."
  value       = docker_registry.this.docker_config_json
  sensitive   = true
}
