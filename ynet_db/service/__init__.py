"""The HTTP API (`ynet-db serve`): search by photo, similar products, health, status and metrics.

service = Service.create(settings, engine, via="process")
app = create_app(service)  # an ASGI app; `ynet-db serve` runs it under uvicorn
"""

from ynet_db.service.app import create_app
from ynet_db.service.state import Service

__all__ = ["Service", "create_app"]
