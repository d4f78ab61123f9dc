terraform {
  required_version = ">= 1.6"

  required_providers {
    docker = {
      source = "anchorage/docker"
    }
  }
}
