terraform {
  required_providers {
    docker = {
      source = "anchorage/docker"
    }
  }
}

provider "docker" {
  # DigitalOcean API token. Leave it out and set DIGITALOCEAN_TOKEN (or
  # DIGITALOCEAN_ACCESS_TOKEN) in the environment, so it stays out of the code.
  # token = var.do_token

  # Base URL of the DigitalOcean API; falls back to DIGITALOCEAN_API_URL.
  # Point it at localocean to try the provider without a cloud account.
  # api_endpoint = "https://api.digitalocean.com"

  # Spaces keys, needed only for `storage { backend = "spaces" }`; they fall
  # back to SPACES_ACCESS_KEY_ID and SPACES_SECRET_ACCESS_KEY.
  # spaces_access_id  = var.spaces_access_id
  # spaces_secret_key = var.spaces_secret_key

  # Spaces S3 endpoint; `{region}` is replaced by the bucket's region. Falls
  # back to SPACES_ENDPOINT_URL.
  # spaces_endpoint = "https://{region}.digitaloceanspaces.com"

  # Retries of a request that failed with 429 or 5xx (Retry-After honoured).
  http_retry_max = 4

  # Client-side rate limit of API requests; 0 means unlimited.
  requests_per_second = 0

  # ACME directory for `tls { source = "acme" }`. Use Let's Encrypt staging
  # while you experiment, to stay clear of production rate limits.
  # acme_directory_url = "https://acme-staging-v02.api.letsencrypt.org/directory"

  # Extra root certificates trusted for the ACME directory (test CAs such as
  # Pebble), as PEM.
  # acme_ca_certificates = file("pebble.minica.pem")
}
