"""The HTTP service's routes, one module per resource: search, products, operations (health, status, metrics)."""
