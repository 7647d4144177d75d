"""Real adapters for the core's ports: RabbitMQ (aiormq) and Redis (redis.asyncio)."""
