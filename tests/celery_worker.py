"""The worker processes' app: ``celery -A tests.celery_worker worker``, with meshprop set up."""

from __future__ import annotations

import meshprop.celery
from tests.celery_app import app

meshprop.celery.setup(app)

__all__ = ["app"]
