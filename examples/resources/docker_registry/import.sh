# The import id is the registry's fqdn. The provider did not make the droplet and holds none
# of its keys, so the next apply replaces it: a volume or Spaces bucket is kept and moves to
# the new droplet. With droplet-disk storage that plan fails (the images would be lost) unless
# the configuration says `storage { accept_image_loss = true }` (to delete such a registry
# instead: `tofu destroy -refresh=false`).
tofu import docker_registry.main registry.example.com
