"""The worker processes' app: ``celery -A tests.celery_worker worker``, with meshprop set up."""

from __future__ import annotations

import os

import meshprop.celery
from integrations._parent_watch import exit_with_parent
from tests.celery_app import app

meshprop.celery.setup(app)

# A test run that is killed leaves no worker behind.
exit_with_parent(os.getppid())

__all__ = ["app"]
