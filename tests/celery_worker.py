"""The worker processes' app: ``celery -A tests.celery_worker worker``, with meshprop set up."""

from __future__ import annotations

import os
import threading

import meshprop.celery
from integrations.services.__main__ import _exit_with_parent
from tests.celery_app import app

meshprop.celery.setup(app)

# A test run that is killed leaves no worker behind.
threading.Thread(target=_exit_with_parent, args=(os.getppid(),), daemon=True).start()

__all__ = ["app"]
