"""Prometheus metrics: `definitions` (every metric, once), `database` (gauges read at scrape time) and
`exposition` (registries, multiprocess mode, the port).

Nothing is imported here: `exposition.start_multiprocess` must run before the definitions are imported.
"""
