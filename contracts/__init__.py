"""Wire formats of jobtrail: messages, their envelope and the names of the broker's routes.

This package is the contract between services. It imports nothing from ``shared`` or ``services``.
"""
