tofu import docker_registry_snapshot.daily 8eb4d51a-873f-11e6-96bf-000f53315a41
