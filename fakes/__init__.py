"""In-memory stand-ins for RabbitMQ and Redis, strict enough to test the core against."""
