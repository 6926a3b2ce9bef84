"""A process that dies at once: what `jobtrail up` must restart."""

raise SystemExit(3)
