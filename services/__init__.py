"""The four jobtrail services: submitter, scheduler, worker and projector."""
