# The inputs of the old terraform-digitalocean-docker-registry module, same
# names and defaults, so a caller can switch `source` and keep its arguments.

variable "fqdn" {
  description = "Fully qualified name of the registry, in a domain managed in this DigitalOcean account. The module creates its A record."
  type        = string
}

variable "region" {
  description = "DigitalOcean region of the droplet (and of the Space, if any), e.g. `ams3`."
  type        = string
}

variable "size" {
  description = "Droplet size slug. Changes in place (a short power-off for the resize)."
  type        = string
  default     = "s-1vcpu-1gb"
}

variable "droplet_name" {
  description = "Name of the droplet: a lowercase DNS label."
  type        = string
  default     = "docker-registry"
}

variable "ssh_key_fingerprint" {
  description = "Fingerprint of a DigitalOcean SSH key that may log in to the droplet as root."
  type        = string
}

variable "admin_password" {
  description = "Password of the `admin` registry user, who may pull and push. 12 characters or more."
  type        = string
  sensitive   = true
}

variable "admin_email" {
  description = "Contact e-mail of the Let's Encrypt account that issues the certificate."
  type        = string
}

variable "space_name" {
  description = "Spaces bucket for the images, in `region`; created if missing. Empty: images stay on the droplet's disk."
  type        = string
  default     = ""
}

variable "space_key" {
  description = "Spaces access key that creates and manages the bucket `space_name` (with `space_secret`). Empty: the provider's `spaces_access_id` (or SPACES_ACCESS_KEY_ID). The registry itself gets its own key for that bucket only."
  type        = string
  default     = ""
  sensitive   = true
}

variable "space_secret" {
  description = "Secret of `space_key`. Empty: the provider's `spaces_secret_key` (or SPACES_SECRET_ACCESS_KEY)."
  type        = string
  default     = ""
  sensitive   = true
}

variable "registry_http_secret" {
  description = "The registry's `http.secret` (16 to 256 printable ASCII characters, no spaces), e.g. shared by several servers. Empty: the provider generates one and keeps it in state."
  type        = string
  default     = ""
  sensitive   = true
}

# New inputs, all optional.

variable "extra_users" {
  description = "More registry users besides `admin`, by name: `password` or `password_bcrypt`, and `access` (`push` or `pull`)."
  type = map(object({
    password        = optional(string)
    password_bcrypt = optional(string)
    access          = optional(string, "pull")
  }))
  default = {}
}

variable "tags" {
  description = "Tags for the droplet."
  type        = list(string)
  default     = []
}

variable "replicas" {
  description = "How many droplets serve the registry (1 to 10). Two or more stand behind a DigitalOcean load balancer and need Spaces storage (`space_name`)."
  type        = number
  default     = 1
}
