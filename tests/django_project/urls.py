"""The test project's URLs: one view per behaviour the tests check."""

from __future__ import annotations

from django.urls import path

from . import views

urlpatterns = [
    path("health", views.health),
    path("ids", views.ids),
    path("async-ids", views.async_ids),
    path("own-id", views.own_id),
    path("boom", views.boom),
    path("async-boom", views.async_boom),
    path("stream", views.stream),
    path("async-stream", views.async_stream),
    path("forward", views.forward),
    path("async-forward", views.async_forward),
    path("stream-forward", views.stream_forward),
    path("async-stream-forward", views.async_stream_forward),
]
