"""Serving protocols as plug-ins: the contract (``base.ServingProtocol``), the shipped ``/v1``
(``v1.V1``) and Open Inference Protocol v2 (``oip_v2.OipV2``), and the registry (``registry``)."""

from __future__ import annotations

from raymlops.serving.protocols.base import OPEN, ServingProtocol
from raymlops.serving.protocols.registry import PROTOCOLS, ROUTE_ROLES, protocol_class

__all__ = ["OPEN", "PROTOCOLS", "ROUTE_ROLES", "ServingProtocol", "protocol_class"]
