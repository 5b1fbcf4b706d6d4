"""What every service shares: configuration, logging, telemetry, errors, model names, gRPC plumbing."""
