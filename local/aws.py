"""The local stack's AWS: moto in server mode (local/moto_server.py) with the local stack's patches of its internals
(local/moto_patches.py), and the template's resources created in it (local/provision.py)."""

from local.moto_server import MotoServer
from local.provision import LAMBDA_ROLE_NAME, provision

__all__ = ["LAMBDA_ROLE_NAME", "MotoServer", "provision"]
