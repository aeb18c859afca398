"""The lifecycle engine: from what was read and gathered, what every status
should say. Pure: no I/O, no clock (the caller passes `now`).

Called by `reconciling` once per reconcile of a RegisteredModel. `deciding`
holds the rules, `reporting` turns decisions into statuses and Events,
`records` the data both share.
"""

from modelreg.lifecycle.deciding import duplicates, plan
from modelreg.lifecycle.records import ARTIFACT_VERIFIED, ROLLED_OUT, Event, ModelInput, Plan, VersionInput

__all__ = ["ARTIFACT_VERIFIED", "ROLLED_OUT", "Event", "ModelInput", "Plan", "VersionInput", "duplicates", "plan"]
