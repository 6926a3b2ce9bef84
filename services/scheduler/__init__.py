"""The scheduler dispatches due jobs, keeps timers for later ones and expires lost leases."""
