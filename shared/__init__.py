"""What two or more jobtrail services need: the domain, the event store, settings, logging."""
