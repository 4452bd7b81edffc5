"""A middleware after meshprop's, as a project's own would be: hybrid sync/async (Django's
``MiddlewareMixin``), it names on the response the request id it saw."""

from __future__ import annotations

from django.http import HttpRequest
from django.http.response import HttpResponseBase
from django.utils.deprecation import MiddlewareMixin

import meshprop


class SeenByNextMiddleware(MiddlewareMixin):
    def process_response(
        self, request: HttpRequest, response: HttpResponseBase
    ) -> HttpResponseBase:
        response.headers["x-seen-by-next-middleware"] = meshprop.request_id() or "-"
        return response
