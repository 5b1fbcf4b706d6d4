"""The Store: the models' OCI image layout on disk, served over gRPC (`python -m modelrunner.store`)."""
