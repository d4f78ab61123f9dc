# A registry on a volume, with weekly backups of its droplet's disk.
resource "docker_registry" "main" {
  name   = "registry"
  region = "ams3"
  fqdn   = "registry.example.com"
  users  = { admin = {} }

  storage {
    backend  = "volume"
    size_gib = 100
  }

  backups {
    plan    = "weekly"
    weekday = "SUN"
    hour    = 4
  }
}

# One consistent snapshot of its volume a day: a new `day` takes a new snapshot and
# deletes the previous one (keep several with `for_each` over a set of days).
resource "docker_registry_snapshot" "daily" {
  name            = "registry-${formatdate("YYYY-MM-DD", plantimestamp())}"
  volume_id       = docker_registry.main.volume_id
  droplet_address = docker_registry.main.ipv4_address
  ssh_private_key = docker_registry.main.management_private_key
  host_public_key = docker_registry.main.host_public_key
}

# A second registry that starts with the snapshot's images.
resource "docker_registry" "restored" {
  name   = "registry-restored"
  region = "ams3"
  fqdn   = "restored.example.com"
  users  = { admin = {} }

  storage {
    backend            = "volume"
    size_gib           = 100
    volume_snapshot_id = docker_registry_snapshot.daily.id
  }
}
