"""The lifecycle engine over time: hypothesis stateful tests.

A simulated cluster lives through sequences of what happens to a model: people
create, restage and delete versions (as `kubectl apply` or a GitOps sync would,
within what admission allows), the store answers artifact checks, Deployments
become Available or fail, the clock moves, the operator restarts and
reconciles. Each reconcile calls `lifecycle.plan` the way `reconciling` does and
feeds the statuses it returns back as the next input. After every step the
lifecycle rules (README, "Using it") that must hold at every instant are checked; the ones about
a single decision (who may take over, fixpoint, restart) are checked on each
plan as it is made.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, replace
from typing import ClassVar

from hypothesis import Phase, settings, target
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from modelreg import lifecycle
from modelreg.api.common import Stage
from modelreg.api.modelversion import ModelVersionSpec, ModelVersionStatus
from modelreg.api.registeredmodel import RegisteredModelSpec, RegisteredModelStatus
from modelreg.facts import ArtifactCheck, Rollout, RolloutState
from tests.unit.lifecycle_builders import MISMATCH, MISSING, NOW, OK, UNAVAILABLE

NUMBERS = ["1", "2", "3", "10", "1.2.0", "2.0.0-rc.1"]
ACCURACIES = [0.95, 0.9, 0.85, 0.5]
# Weighted towards what leads somewhere, so that sequences reach Production often.
STAGES = [Stage.PRODUCTION, Stage.PRODUCTION, Stage.STAGING, Stage.ARCHIVED, Stage.DEVELOPMENT]
CHECKS = [OK, OK, OK, MISMATCH, MISSING, UNAVAILABLE]
ROLLOUTS = [RolloutState.AVAILABLE, RolloutState.FAILED, RolloutState.PROGRESSING]
THRESHOLD = 0.8
GATES = {
    "promotion": {
        "thresholds": [{"metric": "accuracy", "min": THRESHOLD}],
        "compareToProduction": {"metric": "accuracy"},  # higher is better, no margin
    }
}
SERVING = {"serving": {"image": "registry.local/iris-server:1"}}
# Sub-second steps matter: a request keeps sub-second precision, the rest of a status does not.
STEPS = [
    datetime.timedelta(0),
    datetime.timedelta(microseconds=1),
    datetime.timedelta(milliseconds=500),
    datetime.timedelta(seconds=1),
    datetime.timedelta(hours=1),
]
LATER = datetime.timedelta(hours=1)

# Reproducible in CI: the same examples on every run (derandomize, no example
# database), and a failure prints the blob that replays it. Bounded so the file
# stays well under 30 s on a loaded 2-core machine; no deadline, since load
# makes single steps slow. No explain phase: on a failure it would double the
# time spent shrinking, for a hint the printed steps already give.
SETTINGS = settings(
    max_examples=100,
    stateful_step_count=20,
    deadline=None,
    derandomize=True,
    database=None,
    print_blob=True,
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink],
)


class EndpointDropped(AssertionError):
    """The hold rule broke: a version served Production, and now none does,
    though nobody deleted the serving version."""


@dataclass
class SimVersion:
    """One ModelVersion in the simulated cluster: its spec, the status the
    engine last wrote, and the operator's and the world's facts about it."""

    name: str
    number: str
    stage: Stage
    accuracy: float
    generation: int
    uid: str
    status: ModelVersionStatus
    check: ArtifactCheck | None  # what the operator holds in memory; None after a restart
    rollout: RolloutState | None  # None: it has no Deployment
    runs: bool = False  # its Deployment is scaled up

    def spec(self) -> ModelVersionSpec:
        return ModelVersionSpec.model_validate(
            {
                "model": "iris",
                "version": self.number,
                "stage": self.stage,
                "artifact": {"uri": f"s3://models/iris/{self.number}/model.onnx"},
                "metrics": {"accuracy": self.accuracy},
            }
        )


class LifecycleMachine(RuleBasedStateMachine):
    """Every invariant but the hold rule (see `HoldMachine`), with or without serving."""

    serving_modes: ClassVar[tuple[bool, ...]] = (True, False)
    enforce_hold: ClassVar[bool] = False

    def __init__(self) -> None:
        super().__init__()
        self.versions: dict[str, SimVersion] = {}
        self.model_spec = RegisteredModelSpec()
        self.model_status = RegisteredModelStatus()
        self.now = NOW
        self.created = 0
        # Some version has served Production since the serving version was last deleted.
        self.served = False
        # What the search steers towards (see `teardown`): plans where one
        # version serves while another rolls out, and switches between two.
        self.handovers = 0
        self.takeovers = 0

    # -- the model ----------------------------------------------------------

    @initialize(
        data=st.data(),
        gated=st.booleans(),
        first=st.none() | st.sampled_from(NUMBERS),
        others=st.lists(
            st.tuples(st.sampled_from(STAGES), st.sampled_from(ACCURACIES), st.sampled_from(CHECKS),
                      st.sampled_from(ROLLOUTS)),
            max_size=3,
        ),
    )  # fmt: skip
    def start_cluster(
        self,
        data: st.DataObject,
        gated: bool,
        first: str | None,
        others: list[tuple[Stage, float, ArtifactCheck, RolloutState]],
    ) -> None:
        """The model, often a first version already serving Production, and a
        few more versions applied at once, whose Deployments (if they get
        one) then reach the given state. Most of what can go wrong needs a
        populated cluster and a contested Production, and building them step
        by step takes rules that swarm testing (which disables whole rules
        per run) often leaves out."""
        serving = data.draw(st.sampled_from(self.serving_modes), label="serving")
        spec: dict[str, object] = {}
        if serving:
            spec |= SERVING
        if gated:
            spec |= GATES
        self.model_spec = RegisteredModelSpec.model_validate(spec)
        if first is not None:
            self._add_version(first, stage=Stage.PRODUCTION, accuracy=0.9, check=OK)
            self.reconcile()
            if serving:
                self.versions[f"iris-{first}"].rollout = RolloutState.AVAILABLE
                self.reconcile()
            assert self._serving_version() is not None
        numbers = [n for n in NUMBERS if n != first]
        for number, (stage, accuracy, check, _) in zip(numbers, others, strict=False):
            self._add_version(number, stage=stage, accuracy=accuracy, check=check)
        if not others:
            return
        self.reconcile()
        for number, (_, _, _, rollout) in zip(numbers, others, strict=False):
            if self.versions[f"iris-{number}"].runs:
                self.versions[f"iris-{number}"].rollout = rollout
        self._maybe_reconcile(self.serving)

    @property
    def serving(self) -> bool:
        return self.model_spec.serving is not None

    # -- what people do -----------------------------------------------------

    @precondition(lambda self: len(self.versions) < len(NUMBERS))
    @rule(
        data=st.data(),
        stage=st.sampled_from(STAGES),
        accuracy=st.sampled_from(ACCURACIES),
        check=st.sampled_from(CHECKS),
        then_reconcile=st.booleans(),
    )
    def create_version(
        self, data: st.DataObject, stage: Stage, accuracy: float, check: ArtifactCheck, then_reconcile: bool
    ) -> None:
        """Creation at any stage, Production included (a Git repo applied to an empty cluster)."""
        taken = {v.number for v in self.versions.values()}
        number = data.draw(st.sampled_from([n for n in NUMBERS if n not in taken]), label="number")
        self._add_version(number, stage=stage, accuracy=accuracy, check=check)
        self._maybe_reconcile(then_reconcile)

    @precondition(lambda self: bool(self.versions))
    @rule(data=st.data(), then_reconcile=st.booleans())
    def restage_version(self, data: st.DataObject, then_reconcile: bool) -> None:
        """An update of spec.stage, as admission allows it: never Development → Production."""
        v = self.versions[data.draw(st.sampled_from(sorted(self.versions)), label="name")]
        allowed = [s for s in Stage if s is not v.stage]
        if v.stage is Stage.DEVELOPMENT:
            allowed.remove(Stage.PRODUCTION)
        v.stage = data.draw(st.sampled_from(allowed), label="stage")
        v.generation += 1
        self._maybe_reconcile(then_reconcile)

    @precondition(lambda self: any(v.stage is not Stage.PRODUCTION for v in self.versions.values()))
    @rule(data=st.data(), then_reconcile=st.booleans())
    def promote_version(self, data: st.DataObject, then_reconcile: bool) -> None:
        """The usual change, one step up: Development → Staging → Production,
        or Archived → Production (a rollback). A special case of
        `restage_version`, there so that runs go somewhere more often."""
        below = sorted(name for name, v in self.versions.items() if v.stage is not Stage.PRODUCTION)
        v = self.versions[data.draw(st.sampled_from(below), label="name")]
        v.stage = Stage.STAGING if v.stage is Stage.DEVELOPMENT else Stage.PRODUCTION
        v.generation += 1
        self._maybe_reconcile(then_reconcile)

    @precondition(lambda self: len(self.versions) > 1)  # deleting the last one leads nowhere
    @rule(data=st.data(), then_reconcile=st.booleans())
    def delete_version(self, data: st.DataObject, then_reconcile: bool) -> None:
        gone = self.versions.pop(data.draw(st.sampled_from(sorted(self.versions)), label="name"))
        if gone.status.stage is Stage.PRODUCTION:
            self.served = False  # deleting the serving version is the one way to leave none
        self._maybe_reconcile(then_reconcile)

    # -- what the world does ------------------------------------------------

    @precondition(lambda self: bool(self.versions))
    @rule(data=st.data(), check=st.sampled_from(CHECKS), then_reconcile=st.booleans())
    def check_artifact(self, data: st.DataObject, check: ArtifactCheck, then_reconcile: bool) -> None:
        """A (re-)check of one artifact passes, fails, or finds the store unavailable."""
        self.versions[data.draw(st.sampled_from(sorted(self.versions)), label="name")].check = check
        self._maybe_reconcile(then_reconcile)

    @precondition(lambda self: any(v.runs for v in self.versions.values()))
    @rule(data=st.data(), state=st.sampled_from(ROLLOUTS), then_reconcile=st.booleans())
    def change_rollout(self, data: st.DataObject, state: RolloutState, then_reconcile: bool) -> None:
        """A scaled-up Deployment becomes Available, misses its progress deadline, or progresses again."""
        changing = sorted(name for name, v in self.versions.items() if v.runs and v.rollout is not state)
        if changing:
            self.versions[data.draw(st.sampled_from(changing), label="name")].rollout = state
        self._maybe_reconcile(then_reconcile)

    @precondition(lambda self: any(v.runs and v.rollout is RolloutState.PROGRESSING for v in self.versions.values()))
    @rule(data=st.data(), then_reconcile=st.booleans())
    def complete_rollout(self, data: st.DataObject, then_reconcile: bool) -> None:
        """The usual outcome: a Progressing Deployment becomes Available. A
        special case of `change_rollout`, there so that runs go somewhere more often."""
        progressing = sorted(n for n, v in self.versions.items() if v.runs and v.rollout is RolloutState.PROGRESSING)
        self.versions[data.draw(st.sampled_from(progressing), label="name")].rollout = RolloutState.AVAILABLE
        self._maybe_reconcile(then_reconcile)

    @rule(step=st.sampled_from(STEPS))
    def advance_clock(self, step: datetime.timedelta) -> None:
        self.now += step

    # -- what the operator does ---------------------------------------------

    @rule(then_reconcile=st.booleans())
    def restart_operator(self, then_reconcile: bool) -> None:
        """Memory is lost; status, the versions and their Deployments stay."""
        for v in self.versions.values():
            v.check = None
        self._maybe_reconcile(then_reconcile)

    @rule()
    def reconcile(self) -> None:
        incumbent = self._serving_version()
        before = {name: replace(v) for name, v in self.versions.items()}
        rollouts = self._rollouts()
        plan = lifecycle.plan(self._model_input(), self._inputs(), now=self.now, rollouts=rollouts)
        self._check_takeover(plan, incumbent, before, rollouts)
        self.handovers += plan.production is not None and plan.rolling_out is not None
        self.takeovers += incumbent is not None and plan.production not in (None, incumbent)
        for name, status in plan.versions.items():
            self.versions[name].status = status
        assert plan.model is not None
        self.model_status = plan.model
        self._check_fixpoint(plan, rollouts)
        self._check_restart(plan, rollouts)
        self._deploy(plan)
        if plan.production is not None:
            self.served = True

    def _maybe_reconcile(self, then_reconcile: bool) -> None:
        """Changes either reach a reconcile one by one, or several land before
        it runs (a GitOps sync applying a commit object by object). Planning
        inside the change rules also keeps swarm testing, which disables
        whole rules per run, from leaving most runs without any reconcile."""
        if then_reconcile:
            self.reconcile()

    def teardown(self) -> None:
        # Steer generation towards runs where Production changes hands: they
        # are where the interesting rules meet, and they take several
        # well-ordered steps that random generation rarely lines up.
        target(float(self.handovers), label="handovers")
        target(float(self.takeovers), label="takeovers")

    # -- invariants at every instant ----------------------------------------

    @invariant()
    def never_two_production_versions(self) -> None:
        serving = [name for name, v in self.versions.items() if v.status.stage is Stage.PRODUCTION]
        assert len(serving) <= 1, f"several versions serve Production: {serving}"

    @invariant()
    def production_is_held_until_handed_over(self) -> None:
        """Once a version serves, one keeps serving until another takes over,
        unless the serving version is deleted. A serving version whose spec
        leaves Production with no replacement asked for keeps serving: a GitOps
        sync may apply `v1: Archived` before `v2: Production`. Only with serving:
        without `spec.serving` nothing is served and a stage is only a record."""
        if not self.enforce_hold or not self.served or not self.serving:
            return
        if self._serving_version() is None:
            stages = {name: (v.stage.value, v.status.stage) for name, v in sorted(self.versions.items())}
            raise EndpointDropped(f"no version serves Production any more; (spec, status) stages: {stages}")

    # -- checks on each plan ------------------------------------------------

    def _check_takeover(
        self,
        plan: lifecycle.Plan,
        incumbent: str | None,
        before: dict[str, SimVersion],
        rollouts: dict[str, Rollout] | None,
    ) -> None:
        """Who may serve after this plan: the incumbent, or a version whose
        request passes its gates (blue/green: once its rollout is Available)."""
        production = [name for name, s in plan.versions.items() if s.stage is Stage.PRODUCTION]
        assert plan.production == (production[0] if production else None), (
            f"the plan says {plan.production} serves, the statuses say {production}"
        )
        if incumbent is not None and before[incumbent].stage is Stage.PRODUCTION:
            assert plan.production is not None, f"{incumbent} still asks for Production yet stopped serving"
        new = plan.production
        if new is None or new == incumbent:
            return
        assert before[new].stage is Stage.PRODUCTION, f"{new} serves Production without asking for it"
        assert new in self._reachable(incumbent, before, rollouts), (
            f"{new} took Production from {incumbent} though its request fails its gates or its rollout failed"
        )
        if rollouts is not None:
            state = rollouts[new].state if new in rollouts else None
            assert state is RolloutState.AVAILABLE, f"serving switched to {new} whose rollout is {state}"

    def _reachable(
        self, incumbent: str | None, before: dict[str, SimVersion], rollouts: dict[str, Rollout] | None
    ) -> set[str | None]:
        """The versions that may serve after one plan: the incumbent, and any
        Production request that passes its own gates and compares well with
        one that may serve (the engine re-decides against each new winner)."""
        reachable: set[str | None] = {incumbent}
        grew = True
        while grew:
            grew = False
            for name, v in before.items():
                if name in reachable or v.stage is not Stage.PRODUCTION or not self._passes_own_gates(v, rollouts):
                    continue
                if any(self._compares_well(v, before[s] if s else None) for s in reachable):
                    reachable.add(name)
                    grew = True
        return reachable

    def _passes_own_gates(self, v: SimVersion, rollouts: dict[str, Rollout] | None) -> bool:
        if v.check is not None:
            artifact_ok = v.check.ok
        else:  # after a restart the engine goes by the condition it wrote last time
            artifact_ok = any(c.type == lifecycle.ARTIFACT_VERIFIED and c.status == "True" for c in v.status.conditions)
        failed = rollouts is not None and v.name in rollouts and rollouts[v.name].state is RolloutState.FAILED
        threshold_ok = not self.model_spec.promotion.thresholds or v.accuracy >= THRESHOLD
        return artifact_ok and threshold_ok and not failed

    def _compares_well(self, v: SimVersion, serving: SimVersion | None) -> bool:
        if self.model_spec.promotion.compare_to_production is None or serving is None:
            return True
        if any(t.stage is Stage.PRODUCTION for t in v.status.history):
            return True  # a rollback is not compared
        return v.accuracy >= serving.accuracy

    def _check_fixpoint(self, plan: lifecycle.Plan, rollouts: dict[str, Rollout] | None) -> None:
        """Planning on its own output changes nothing, now or on a periodic
        reconcile later: a reconcile with nothing to do writes nothing."""
        for at in (self.now, self.now + LATER):
            again = lifecycle.plan(self._model_input(), self._inputs(), now=at, rollouts=rollouts)
            assert again.versions == plan.versions, f"a second plan at {at} changed statuses"
            assert again.model == plan.model, f"a second plan at {at} changed the model status"
            assert again.events == [], f"a second plan at {at} emitted {again.events}"

    def _check_restart(self, plan: lifecycle.Plan, rollouts: dict[str, Rollout] | None) -> None:
        """A restarted operator, knowing only what status says (no artifact
        check in memory), decides the same and so writes nothing."""
        fresh = [replace(v, artifact=None) for v in self._inputs()]
        after = lifecycle.plan(self._model_input(), fresh, now=self.now, rollouts=rollouts)
        stages = {n: s.stage for n, s in after.versions.items()}
        assert stages == {n: s.stage for n, s in plan.versions.items()}, f"after a restart the stages are {stages}"
        assert (after.production, after.rolling_out) == (plan.production, plan.rolling_out), (
            "a restart moved Production"
        )
        assert after.versions == plan.versions, "after a restart the statuses differ"
        assert after.model == plan.model, "after a restart the model status differs"

    # -- the simulated operator's inputs and outputs ------------------------

    def _add_version(self, number: str, *, stage: Stage, accuracy: float, check: ArtifactCheck) -> None:
        self.created += 1
        name = f"iris-{number}"
        self.versions[name] = SimVersion(
            name=name,
            number=number,
            stage=stage,
            accuracy=accuracy,
            generation=1,
            uid=f"uid-{self.created}",
            status=ModelVersionStatus(),
            check=check,  # the operator checks a never-verified artifact on its first reconcile
            rollout=None,
        )

    def _serving_version(self) -> str | None:
        return next((name for name, v in self.versions.items() if v.status.stage is Stage.PRODUCTION), None)

    def _model_input(self) -> lifecycle.ModelInput:
        return lifecycle.ModelInput(name="iris", generation=1, spec=self.model_spec, status=self.model_status)

    def _inputs(self) -> list[lifecycle.VersionInput]:
        return [
            lifecycle.VersionInput(
                name=v.name, generation=v.generation, spec=v.spec(), status=v.status, artifact=v.check, uid=v.uid
            )
            for v in self.versions.values()
        ]

    def _rollouts(self) -> dict[str, Rollout] | None:
        """What the operator reads from the Deployments; None when nothing is served."""
        if not self.serving:
            return None
        return {name: Rollout(v.rollout) for name, v in self.versions.items() if v.rollout is not None}

    def _deploy(self, plan: lifecycle.Plan) -> None:
        """What applying the plan does to the Deployments (`serving.plan_serving`):
        the versions that run (Production, the one rolling out, Staging) are
        scaled up, and a Deployment that is created or scaled up is Progressing
        until the world says otherwise; the others are kept scaled to zero,
        which `serving.rollout_of` reads as Progressing, never Available."""
        if not self.serving:
            return
        for name, v in self.versions.items():
            runs = name in (plan.production, plan.rolling_out) or v.status.stage is Stage.STAGING
            if runs != v.runs:  # created or scaled up, or scaled to zero
                v.rollout = RolloutState.PROGRESSING
            v.runs = runs


class ServedMachine(LifecycleMachine):
    """Serving enabled: switches wait for rollouts (most sequences live here)."""

    serving_modes = (True,)


class UnservedMachine(LifecycleMachine):
    """No serving spec: a switch is immediate."""

    serving_modes = (False,)


class HoldMachine(LifecycleMachine):
    """Every invariant, the hold rule included (it binds only while serving is on)."""

    enforce_hold = True


TestServedModel = ServedMachine.TestCase
TestServedModel.settings = SETTINGS

TestUnservedModel = UnservedMachine.TestCase
TestUnservedModel.settings = SETTINGS


TestProductionIsHeld = HoldMachine.TestCase
TestProductionIsHeld.settings = SETTINGS
