"""Search: a query photo is encoded, short-listed in SQL (`prefilter`, the one nearest-neighbour policy),
filtered (`filters`) and re-ranked (`query`). `client` hands queries to search workers.

    from ynet_db.search import search
    result = search(engine, "photo.jpg", k=20)
"""

from ynet_db.search.filters import FilterError
from ynet_db.search.prefilter import SearchError, SearchRow
from ynet_db.search.query import SearchQuery, SearchResult, search, search_many_queries

__all__ = ["FilterError", "SearchError", "SearchQuery", "SearchResult", "SearchRow", "search", "search_many_queries"]
