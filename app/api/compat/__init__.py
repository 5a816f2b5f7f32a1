"""Compatibility with the original SpotOn web frontend (``SPOTON_FRONTEND_COMPAT=1``; docs/frontend-compat.md).

An opt-in adapter on top of the task manager and the hub: REST shims under ``/api/v1/detection-processing-tasks``
and ``/api/v1/controls``, the legacy per-camera JSON WebSocket (chosen by a ``tab_id`` query on
``/ws/tracking/{task_id}``), ``/ws/focus/{task_id}``, and 16:9 letterboxed MJPEG for the frontend's camera ids.
The native protocol is unchanged.
"""
