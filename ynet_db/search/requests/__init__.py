"""Search from SQL alone: backends insert requests into `ynet.search_requests`, a search worker answers them.

`queue` holds the table's operations (claim, answer, fail, release, sweep); `worker` the loop that
`ynet-db search-worker` runs. The SQL side (the tables, `ynet.search_wait`, the client role's rights) is
migration 0010's.
"""

from ynet_db.search.requests.queue import ClaimedRequest, Sweep, answer, claim, fail, release, sweep
from ynet_db.search.requests.worker import RegisteredModels, RequestWorker, RequestWorkerOptions

__all__ = [
    "ClaimedRequest",
    "RegisteredModels",
    "RequestWorker",
    "RequestWorkerOptions",
    "Sweep",
    "answer",
    "claim",
    "fail",
    "release",
    "sweep",
]
