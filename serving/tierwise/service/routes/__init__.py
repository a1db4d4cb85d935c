"""The service's routes, one module per OpenAPI tag: `routing` (classify.py), `feedback`,
`operations` (health, readiness, metrics, model) and `admin`."""

from __future__ import annotations

from fastapi import APIRouter

from tierwise.service.routes import admin, classify, feedback, operations

# In this order in the OpenAPI document, as the service has always listed them.
ROUTERS: tuple[APIRouter, ...] = (classify.router, feedback.router, operations.router, admin.router)
