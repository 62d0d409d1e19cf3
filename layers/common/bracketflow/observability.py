"""The one place the Powertools logger, tracer and metrics are created; everything imports them from here."""

from __future__ import annotations

from aws_lambda_powertools import Logger, Metrics, Tracer

logger = Logger(service="bracketflow")
tracer = Tracer(service="bracketflow")
metrics = Metrics(namespace="bracketflow", service="bracketflow")
