"""Settings of the Django project the tests serve: meshprop's middleware first, a hybrid
middleware after it, and ``ContextFilter`` on the log handlers.

The servers in subprocesses load it as ``DJANGO_SETTINGS_MODULE``; the in-process tests pass
its values to ``settings.configure`` (with the records kept in memory instead of printed).
"""

from __future__ import annotations

import os
from typing import Any

SECRET_KEY = "meshprop-tests-only"
DEBUG = os.environ.get("DJANGO_PROJECT_DEBUG") == "1"
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "testserver"]
ROOT_URLCONF = "tests.django_project.urls"
WSGI_APPLICATION = "tests.django_project.wsgi.application"
INSTALLED_APPS: list[str] = []
DATABASES: dict[str, Any] = {}
USE_TZ = True

MIDDLEWARE = [
    "meshprop.django.MeshPropMiddleware",
    "tests.django_project.middleware.SeenByNextMiddleware",
    "django.middleware.common.CommonMiddleware",
]

#: What the project's log lines show: the servers' tests read them from the process output.
LOG_FORMAT = "%(levelname)s %(name)s request_id=%(request_id)s trace_id=%(trace_id)s %(message)s"


def logging_to(*handlers: str) -> dict[str, Any]:
    """The ``LOGGING`` dictConfig, with ``ContextFilter`` on each handler: records of Django's
    ``django.request`` and of the project's views, to ``console`` and/or ``memory``."""
    loggers = {"handlers": list(handlers), "level": "INFO", "propagate": False}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"meshprop": {"()": "meshprop.logging.ContextFilter"}},
        "formatters": {"ids": {"format": LOG_FORMAT}},
        "handlers": {
            "console": {
                "class": "logging.StreamHandler",
                "filters": ["meshprop"],
                "formatter": "ids",
            },
            "memory": {
                "class": "tests.django_project.logs.RecordsHandler",
                "filters": ["meshprop"],
                "formatter": "ids",
            },
        },
        "loggers": {"django.request": loggers, "tests.django_project": loggers},
    }


LOGGING = logging_to("console")
