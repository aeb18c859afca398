"""The modelreg API: pydantic types of both kinds, the single source of the CRDs."""

from modelreg.api.common import API_VERSION, FIELD_MANAGER, GROUP, VERSION, Condition, Stage
from modelreg.api.modelversion import Artifact, ModelVersionSpec, ModelVersionStatus
from modelreg.api.registeredmodel import RegisteredModelSpec, RegisteredModelStatus

__all__ = [
    "API_VERSION",
    "FIELD_MANAGER",
    "GROUP",
    "VERSION",
    "Artifact",
    "Condition",
    "ModelVersionSpec",
    "ModelVersionStatus",
    "RegisteredModelSpec",
    "RegisteredModelStatus",
    "Stage",
]
