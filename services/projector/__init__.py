"""The projector follows the log: it relays events to RabbitMQ and projects status into Redis."""
