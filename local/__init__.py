"""The local stack: template.yaml realised on this machine (moto, in-process Lambdas, a local API Gateway, pollers)."""
