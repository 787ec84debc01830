"""Customer notices: decided by the engine, sent once by the outbox."""
