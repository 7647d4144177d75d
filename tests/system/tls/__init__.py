"""Throwaway TLS endpoints on loopback for the TLS tests: certificates, Redis, RabbitMQ."""
