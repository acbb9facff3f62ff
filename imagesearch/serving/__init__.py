"""gRPC plumbing shared by both services: handlers, interceptors, logging, server set-up."""
