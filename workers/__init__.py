"""The Celery side of ynet-db: the app (`app`), thin tasks (`tasks`), per-process resources
(`process`) and the dispatcher that turns database notifications and a periodic sweep into tasks.

Shipped as the package `ynet_db.workers`; import it by that name.
"""
