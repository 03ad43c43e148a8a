"""The HTTP API (``lanskap serve``): A1111's /sdapi/v1 and lanskap's /api/v1 over the shared Service."""
