"""`kubectl modelreg`: the registry from a person's terminal, against any cluster a kubeconfig names.

Installed as the `kubectl-modelreg` executable (krew's naming: kubectl finds it on PATH and runs
it for `kubectl modelreg ...`). Subcommands: list, history, why, promote, rollback, diff.

The functions that turn read objects into rows, reports and verdicts are pure (unit tested);
`main` and the `_cmd_*` functions read through `kube` and print. A stage change is made the
way `modelreg stage` makes it (`staging.stage_changes`): promoting archives the other
Production requests, so the desired state stays Git-tidy.

Exit codes (also in the README):
  0  done (promote/rollback: the `<model>` Service selects the version and it is in Production)
  1  error: not found, a request refused, the API unreachable
  2  usage error
  3  the version failed: held by a gate, its rollout failed, or superseded (the reason is printed)
  4  timed out waiting
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TextIO

import yaml

from modelreg import kube, serving, staging
from modelreg.api import modelversion as mv
from modelreg.api import registeredmodel as rm
from modelreg.api.common import Stage
from modelreg.gates import RELEASE_MARK

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_FAILED, EXIT_TIMEOUT = 0, 1, 2, 3, 4
USER_AGENT = "kubectl-modelreg"
FAILED_PHASES = ("Blocked", "Failed", "Superseded")

Obj = dict[str, Any]
Row = dict[str, Any]


# ---- pure: rows, reports, verdicts ----


def condition(obj: Obj, type_: str) -> Obj:
    return next((c for c in (obj.get("status") or {}).get("conditions", []) if c.get("type") == type_), {})


def _health(obj: Obj) -> tuple[str, str]:
    """(Ready status, reason) of an object, '-' before the operator wrote any."""
    ready = condition(obj, "Ready")
    return ready.get("status", "-"), ready.get("reason", "-")


def model_rows(models: list[Obj], versions: list[Obj]) -> list[Row]:
    """One row per model (every RegisteredModel, and every model a version names)."""
    by_key: dict[tuple[str, str], Obj | None] = {(m["metadata"]["namespace"], m["metadata"]["name"]): m for m in models}
    counts: dict[tuple[str, str], int] = {}
    for v in versions:
        key = (v["metadata"]["namespace"], v.get("spec", {}).get("model", ""))
        by_key.setdefault(key, None)
        counts[key] = counts.get(key, 0) + 1
    rows = []
    for (namespace, name), model in sorted(by_key.items()):
        st = (model or {}).get("status") or {}
        ready, reason = _health(model) if model else ("False", "NoRegisteredModel")
        rows.append({"namespace": namespace, "model": name, "production": st.get("productionVersion") or "",
                     "staging": st.get("stagingVersion") or "", "best": st.get("bestVersion") or "",
                     "versions": counts.get((namespace, name), 0), "ready": ready, "reason": reason})  # fmt: skip
    return rows


def history_rows(versions: list[Obj], events: list[Obj]) -> list[Row]:
    """Every stage transition of every version (status.history) and every Event about them,
    newest first. An Event that repeats a transition (same version and reason, within a
    few seconds) is left out; the Events keep what status.history's last 20 dropped."""
    rows: list[Row] = []
    seen: list[tuple[str, str, float]] = []
    for v in versions:
        name, version = v["metadata"]["name"], v.get("spec", {}).get("version", "")
        for t in (v.get("status") or {}).get("history", []):
            rows.append({"time": t.get("time", ""), "version": version, "object": name,
                         "stage": t.get("stage", ""), "reason": t.get("reason", ""),
                         "message": t.get("message", ""), "source": "status"})  # fmt: skip
            seen.append((name, t.get("reason", ""), _epoch(t.get("time"))))
    version_of = {v["metadata"]["name"]: v.get("spec", {}).get("version", "") for v in versions}
    for e in events:
        name = e.get("involvedObject", {}).get("name", "")
        when = e.get("lastTimestamp") or e.get("eventTime") or e.get("firstTimestamp") or ""
        reason = e.get("reason", "")
        if any(n == name and r == reason and abs(t - _epoch(when)) <= 5 for n, r, t in seen):
            continue
        rows.append({"time": _iso(when), "version": version_of.get(name, ""), "object": name, "stage": "",
                     "reason": reason, "message": e.get("message", ""), "source": "event"})  # fmt: skip
    # Times have one-second resolution: within a second, a version's later transition (later in its
    # status.history, which is oldest first) comes first.
    order = {id(r): i for i, r in enumerate(rows)}
    return sorted(rows, key=lambda r: (_epoch(r["time"]), order[id(r)]), reverse=True)


def _epoch(value: Any) -> float:
    if isinstance(value, datetime):
        return value.timestamp()
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return 0.0


def _iso(value: Any) -> str:
    """One spelling of UTC for every row, as status.history writes it."""
    text = value.isoformat() if isinstance(value, datetime) else str(value)
    return text.replace("+00:00", "Z")


def split_release(message: str) -> tuple[str, str]:
    """A gate's message and what would release it (the operator joins them with '; to release: ')."""
    held, _, release = message.partition(RELEASE_MARK)
    return held, release


def why_report(version: Obj, model: Obj | None, selector: dict[str, str] | None) -> Row:
    """Which gate or rollout holds a version, and what would release it."""
    spec, st = version.get("spec", {}), version.get("status") or {}
    served = bool(selector) and (selector or {}).get(serving.VERSION_LABEL) == serving.version_label(
        str(spec.get("version", ""))
    )
    holds = []
    for c in st.get("conditions", []):
        if c.get("type") in ("Ready", "Reconciling", "Stalled") or c.get("status") == "True":
            continue
        held, release = split_release(c.get("message", ""))
        holds.append({"condition": c["type"], "status": c.get("status", ""), "reason": c.get("reason", ""),
                      "message": held, "release": release})  # fmt: skip
    ready = condition(version, "Ready")
    summary, summary_release = split_release(ready.get("message", ""))
    if not summary_release and holds:
        summary_release = holds[0]["release"]
    requested, effective = spec.get("stage", Stage.DEVELOPMENT.value), st.get("stage") or ""
    return {
        "version": version["metadata"]["name"],
        "model": spec.get("model", ""),
        "requested": requested,
        "effective": effective,
        "phase": st.get("phase") or "",
        "served": served,
        "settled": ready.get("status") == "True",
        "reason": ready.get("reason", ""),
        "message": summary,
        "release": summary_release,
        "holds": holds,
        "productionVersion": ((model or {}).get("status") or {}).get("productionVersion") or "",
    }


def render_why(report: Row) -> str:
    lines = [f"{report['version']} (model {report['model']}): requested {report['requested']}, "
             f"effective {report['effective'] or '-'}, phase {report['phase'] or '-'}"]  # fmt: skip
    if report["settled"]:
        lines.append(f"nothing holds it: {report['message']}")
    else:
        lines.append(f"held: {report['reason']}: {report['message']}")
        for h in report["holds"]:
            lines.append(f"  {h['condition']}={h['status']} ({h['reason']}): {h['message']}")
            if h["release"]:
                lines.append(f"    to release: {h['release']}")
        if report["release"]:
            lines.append(f"to release: {report['release']}")
    serving_now = report["productionVersion"] or "nothing"
    lines.append(f"the Service {report['model']} {'serves it' if report['served'] else 'serves ' + serving_now}")
    return "\n".join(lines)


@dataclass(frozen=True)
class Verdict:
    state: str  # done, failed or waiting
    reason: str
    message: str


def promotion_verdict(version: Obj, selector: dict[str, str] | None, *, target: Stage) -> Verdict:
    """Where a stage request stands. Judged only on a status that saw the request
    (observedGeneration): an older one would report the stage left behind."""
    st = version.get("status") or {}
    spec = version.get("spec", {})
    if (st.get("observedGeneration") or 0) < version["metadata"].get("generation", 0):
        return Verdict("waiting", "NotObserved", "the operator has not seen the request yet")
    ready = condition(version, "Ready")
    if target is Stage.PRODUCTION:
        label = serving.version_label(str(spec.get("version", "")))
        if st.get("stage") == Stage.PRODUCTION.value and (selector or {}).get(serving.VERSION_LABEL) == label:
            return Verdict("done", "Serving", f"the Service {spec.get('model')} serves version {spec.get('version')}")
    elif st.get("stage") == target.value and ready.get("status") == "True":
        return Verdict("done", ready.get("reason", "Ready"), f"{target.value}: {ready.get('message', '')}")
    if st.get("phase") in FAILED_PHASES:
        stalled = condition(version, "Stalled")
        cause = stalled if stalled.get("status") == "True" else ready
        reason = cause.get("reason") or str(st["phase"])
        return Verdict("failed", reason, cause.get("message") or f"phase {st['phase']}")
    return Verdict("waiting", ready.get("reason") or st.get("phase") or "Pending", ready.get("message", ""))


def held_before_request(version: Obj, *, target: Stage) -> Verdict | None:
    """A version a gate holds now is refused before any change (`staging.held_now`)."""
    held = staging.held_now(version, stage=target)
    return Verdict("failed", *held) if held else None


def rollback_target(versions: list[Obj], *, asked: str | None) -> Obj:
    """The version to roll back to: the one asked for (object name or spec.version), else
    the version other than those now in Production that most recently entered Production."""
    if asked:
        for v in versions:
            if asked in (v["metadata"]["name"], str(v.get("spec", {}).get("version"))):
                return v
        raise staging.StageChangeError(f"no version {asked!r} of this model")
    best: tuple[float, Obj] | None = None
    for v in versions:
        st = v.get("status") or {}
        if st.get("stage") == Stage.PRODUCTION.value or v.get("spec", {}).get("stage") == Stage.PRODUCTION.value:
            continue
        entered = [_epoch(t.get("time")) for t in st.get("history", []) if t.get("stage") == Stage.PRODUCTION.value]
        if entered and (best is None or max(entered) > best[0]):
            best = (max(entered), v)
    if best is None:
        raise staging.StageChangeError("no earlier Production version to roll back to: name one")
    return best[1]


def waiting_rows(models: list[Obj], versions: list[Obj]) -> list[Row]:
    """Requests the next reconcile will not meet either, from status: each object whose spec
    the operator has not observed yet, and each version whose requested stage is not its
    effective one, with what it waits on or what holds it (and what would release it)."""
    rows: list[Row] = []
    for m in models:
        st = m.get("status") or {}
        if (st.get("observedGeneration") or 0) < m["metadata"].get("generation", 0):
            rows.append({"object": f"registeredmodel/{m['metadata']['name']}", "action": "waits",
                         "detail": "NotObserved: spec changed; not reconciled yet", "release": ""})  # fmt: skip
    for v in versions:
        st, spec = v.get("status") or {}, v.get("spec", {})
        requested, effective = spec.get("stage", Stage.DEVELOPMENT.value), st.get("stage") or ""
        observed = (st.get("observedGeneration") or 0) >= v["metadata"].get("generation", 0)
        if requested == effective and observed:
            continue
        ready = condition(v, "Ready")
        message, release = split_release(ready.get("message", "")) if observed else ("not reconciled yet", "")
        reason = ready.get("reason", "") if observed else "NotObserved"
        rows.append({"object": f"modelversion/{v['metadata']['name']}", "action": "waits",
                     "detail": f"{effective or '-'} → {requested} ({st.get('phase') or '-'}): {reason}: {message}",
                     "release": release})  # fmt: skip
    return rows


def diff_rows(changes: Sequence[Any], waiting: list[Row]) -> list[Row]:
    """The next reconcile's writes (`reconciling.Change`, in its order), then what still
    waits. A version the next reconcile changes is not listed as waiting too."""
    rows = [{"object": c.object, "action": c.action, "detail": c.detail, "release": ""} for c in changes]
    changed = {c.object for c in changes if c.action == "status"}
    return rows + [w for w in waiting if w["object"] not in changed]


def render(data: Any, *, output: str, columns: Sequence[str] = ()) -> str:
    """`data` as json, yaml, or (rows only) a table of `columns`."""
    if output == "json":
        return json.dumps(data, indent=2, default=str)
    if output == "yaml":
        return yaml.safe_dump(data, sort_keys=False, default_flow_style=False).rstrip("\n")
    return table(data, columns)


def table(rows: list[Row], columns: Sequence[str]) -> str:
    """A kubectl-style table: upper-case headers, columns padded by three spaces."""
    if not rows:
        return "No resources found."
    cells = [[c.upper() for c in columns]] + [[_cell(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    return "\n".join("   ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)).rstrip() for line in cells)


def _cell(value: Any) -> str:
    if value is None or value == "":
        return "-" if value is None else ""
    return str(value).replace("\n", " ")


# ---- arguments ----


def parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--namespace", "-n", help="namespace (default: the context's, else default)")
    common.add_argument("--kubeconfig", help="kubeconfig file (default: $KUBECONFIG, then ~/.kube/config)")
    common.add_argument("--context", help="kubeconfig context (default: the current one)")
    common.add_argument("--output", "-o", choices=["table", "json", "yaml"], default="table")
    p = argparse.ArgumentParser(prog="kubectl modelreg", description="The ML model registry, from kubectl. Exit "
                                "codes: 0 done, 1 error, 2 usage, 3 the version failed, 4 timed out.")  # fmt: skip
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)
    ls = sub.add_parser("list", parents=[common], help="models with their Production/Staging versions and health")
    ls.add_argument("--all-namespaces", "-A", action="store_true")
    hist = sub.add_parser("history", parents=[common], help="every stage transition of a model's versions")
    hist.add_argument("model")
    why = sub.add_parser("why", parents=[common], help="what holds a version, and what would release it")
    why.add_argument("version", help="ModelVersion object name")
    diff = sub.add_parser("diff", parents=[common], help="what the operator would write next, and what waits "
                          "(read-only)")  # fmt: skip
    diff.add_argument("model", nargs="?", help="one model (default: all in the namespace)")
    for name, help_ in (("promote", "request Production (or --to Staging) for a version and wait"),
                        ("rollback", "put an earlier version back in Production and wait")):  # fmt: skip
        cmd = sub.add_parser(name, parents=[common], help=help_)
        if name == "promote":
            cmd.add_argument("version", help="ModelVersion object name")
            cmd.add_argument("--to", choices=[Stage.STAGING.value, Stage.PRODUCTION.value],
                             default=Stage.PRODUCTION.value)  # fmt: skip
        else:
            cmd.add_argument("model")
            cmd.add_argument("version", nargs="?", help="object name or spec.version (default: the previous one)")
        cmd.add_argument("--timeout", type=float, default=300.0, help="seconds to wait (default 300)")
        cmd.add_argument("--no-wait", action="store_true", help="make the request and return")
    return p


# ---- shell completion ----

SUBCOMMANDS = ("list", "history", "why", "promote", "rollback", "diff")
COMPLETE_NO_FILES = ":4"  # Cobra's ShellCompDirectiveNoFileComp, the format kubectl reads from a plugin


def completions(words: Sequence[str], *, models: Sequence[str] = (), versions: Sequence[str] = ()) -> list[str]:
    """Candidates for the last of `words` (the word being typed, maybe empty), after
    `kubectl modelreg`. `models` and `versions` are the names in the namespace."""
    *before, current = words or [""]
    if not before:
        return [c for c in SUBCOMMANDS if c.startswith(current)]
    command, previous = before[0], before[-1]
    if previous in ("-o", "--output"):
        candidates: Sequence[str] = ("table", "json", "yaml")
    elif previous == "--to":
        candidates = (Stage.STAGING.value, Stage.PRODUCTION.value)
    elif previous in ("-n", "--namespace", "--kubeconfig", "--context", "--timeout"):
        candidates = ()
    elif current.startswith("-"):
        sub = _subparsers(parser()).get(command)
        candidates = [o for a in (sub._actions if sub else []) for o in a.option_strings]
    else:
        positional = [
            w for i, w in enumerate(before[1:], 1) if not w.startswith("-") and not _takes_value(before[i - 1])
        ]
        if command in ("why", "promote") and not positional:
            candidates = versions
        elif command in ("history", "rollback", "diff") and not positional:
            candidates = models
        elif command == "rollback" and len(positional) == 1:
            candidates = [v for v in versions if v.startswith(f"{positional[0]}-")] or versions
        else:
            candidates = ()
    return [c for c in candidates if c.startswith(current)]


def _takes_value(word: str) -> bool:
    return word in ("-n", "--namespace", "--kubeconfig", "--context", "--timeout", "-o", "--output", "--to")


def _subparsers(p: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in p._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _option(words: Sequence[str], *names: str) -> str | None:
    for i, w in enumerate(words[:-1]):
        if w in names:
            return words[i + 1]
        for n in names:
            if n.startswith("--") and w.startswith(f"{n}="):
                return w.split("=", 1)[1]
    return None


def complete_main(argv: Sequence[str] | None = None) -> int:
    """`kubectl_complete-modelreg WORDS...`: kubectl (1.26+) runs this for `kubectl modelreg <TAB>`.
    Names come from the cluster the words name; a cluster that does not answer completes nothing."""
    words = list(sys.argv[1:] if argv is None else argv)
    models: list[str] = []
    versions: list[str] = []
    if len(words) > 1 and not words[-1].startswith("-"):
        try:
            kubeconfig, context = _option(words, "--kubeconfig"), _option(words, "--context")
            client = kube.new_client(kubeconfig, context=context, user_agent=USER_AGENT)
            namespace = _option(words, "-n", "--namespace") or _context_namespace(kubeconfig, context)
            models = sorted({m["metadata"]["name"] for m in kube.list_objects(client, plural=rm.PLURAL,
                                                                              namespace=namespace)})  # fmt: skip
            versions = sorted(v["metadata"]["name"] for v in kube.list_objects(client, plural=mv.PLURAL,
                                                                               namespace=namespace))  # fmt: skip
        except Exception:  # completion never prints an error into the command line being typed
            pass
    print("\n".join([*completions(words, models=models, versions=versions), COMPLETE_NO_FILES]))
    return EXIT_OK


# ---- I/O ----


def main(argv: Sequence[str] | None = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    if words[:1] == ["__complete"]:  # as Cobra programs do; kubectl_complete-modelreg runs the same
        return complete_main(words[1:])
    args = parser().parse_args(words)
    try:
        client = kube.new_client(args.kubeconfig, context=args.context, user_agent=USER_AGENT)
        namespace = args.namespace or _context_namespace(args.kubeconfig, args.context)
        command = {"list": _cmd_list, "history": _cmd_history, "why": _cmd_why,
                   "promote": _cmd_promote, "rollback": _cmd_rollback, "diff": _cmd_diff}[args.command]  # fmt: skip
        return command(client, namespace, args)
    except staging.StageChangeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except Exception as exc:  # the API unreachable or refusing: one line, not a traceback
        body = getattr(exc, "body", None)
        print(f"error: {_api_message(body) or exc}", file=sys.stderr)
        return EXIT_ERROR


def _api_message(body: Any) -> str:
    try:
        return str(json.loads(body).get("message", ""))
    except (TypeError, ValueError, AttributeError):
        return ""


def _context_namespace(kubeconfig: str | None, context: str | None) -> str:
    import kubernetes.config

    try:
        contexts, current = kubernetes.config.list_kube_config_contexts(config_file=kubeconfig)
    except Exception:  # in-cluster, or no kubeconfig: kubectl's default
        return "default"
    chosen = next((c for c in contexts if c["name"] == context), current) if context else current
    return str((chosen or {}).get("context", {}).get("namespace") or "default")


def _cmd_list(client: Any, namespace: str, args: argparse.Namespace) -> int:
    scope = None if args.all_namespaces else namespace
    rows = model_rows(kube.list_objects(client, plural=rm.PLURAL, namespace=scope),
                      kube.list_objects(client, plural=mv.PLURAL, namespace=scope))  # fmt: skip
    columns = ["model", "production", "staging", "best", "versions", "ready", "reason"]
    print(render(rows, output=args.output, columns=["namespace", *columns] if args.all_namespaces else columns))
    return EXIT_OK


def _cmd_history(client: Any, namespace: str, args: argparse.Namespace) -> int:
    versions = kube.list_versions(client, namespace=namespace, model=args.model)
    if not versions and kube.read_model(client, namespace=namespace, name=args.model) is None:
        print(f"error: no model {args.model!r} in namespace {namespace!r}", file=sys.stderr)
        return EXIT_ERROR
    names = {v["metadata"]["name"] for v in versions}
    events = kube.list_events_about(client, namespace=namespace, kind=mv.KIND, names=names)
    rows = history_rows(versions, events)
    print(render(rows, output=args.output, columns=["time", "version", "stage", "reason", "message"]))
    return EXIT_OK


def _cmd_why(client: Any, namespace: str, args: argparse.Namespace) -> int:
    version = kube.read_version(client, namespace=namespace, name=args.version)
    if version is None:
        print(f"error: ModelVersion {args.version!r} not found in namespace {namespace!r}", file=sys.stderr)
        return EXIT_ERROR
    model_name = version["spec"]["model"]
    report = why_report(version, kube.read_model(client, namespace=namespace, name=model_name),
                        kube.read_service_selector(client, namespace=namespace, name=model_name))  # fmt: skip
    print(render_why(report) if args.output == "table" else render(report, output=args.output))
    return EXIT_OK


def _cmd_diff(client: Any, namespace: str, args: argparse.Namespace) -> int:
    # The operator's own planning code (it imports the S3 client): loaded for this command only.
    from modelreg import reconciling

    models = kube.list_objects(client, plural=rm.PLURAL, namespace=namespace)
    versions = kube.list_objects(client, plural=mv.PLURAL, namespace=namespace)
    names = sorted({m["metadata"]["name"] for m in models} | {v.get("spec", {}).get("model", "") for v in versions})
    if args.model:
        names = [args.model]
    changes: list[reconciling.Change] = []
    now = reconciling.utcnow()
    for name in names:
        model = next((m for m in models if m["metadata"]["name"] == name), None)
        theirs = [v for v in versions if v.get("spec", {}).get("model") == name]
        owned = kube.read_owned(client, namespace=namespace, model=name)
        changes += reconciling.preview(model, theirs, owned, now=now, operator_image=_operator_image(owned))
    waiting = waiting_rows([m for m in models if m["metadata"]["name"] in names],
                           [v for v in versions if v.get("spec", {}).get("model") in names])  # fmt: skip
    rows = diff_rows(changes, waiting)
    if args.output == "table" and not rows:
        print("nothing to do: the operator would write nothing, and no request waits")
    else:
        print(render(rows, output=args.output, columns=["object", "action", "detail"]))
    return EXIT_OK


def _operator_image(owned: kube.OwnedObjects) -> str:
    """The image the running operator puts in serving Pods (its MODELREG_OPERATOR_IMAGE), as
    its Deployments show it: a diff should not report the plugin's default as a change."""
    for d in owned.deployments.values():
        for c in d.get("spec", {}).get("template", {}).get("spec", {}).get("initContainers") or []:
            if c.get("name") == serving.FETCH_CONTAINER:
                return str(c["image"])
    return serving.DEFAULT_OPERATOR_IMAGE


def _cmd_promote(client: Any, namespace: str, args: argparse.Namespace) -> int:
    version = kube.read_version(client, namespace=namespace, name=args.version)
    if version is None:
        print(f"error: ModelVersion {args.version!r} not found in namespace {namespace!r}", file=sys.stderr)
        return EXIT_ERROR
    return _request_and_wait(client, namespace, version, Stage(args.to), args)


def _cmd_rollback(client: Any, namespace: str, args: argparse.Namespace) -> int:
    versions = kube.list_versions(client, namespace=namespace, model=args.model)
    target = rollback_target(versions, asked=args.version)
    return _request_and_wait(client, namespace, target, Stage.PRODUCTION, args)


def _request_and_wait(client: Any, namespace: str, version: Obj, stage: Stage, args: argparse.Namespace) -> int:
    name, model = version["metadata"]["name"], version["spec"]["model"]
    held = held_before_request(version, target=stage)
    if held is not None:
        print(f"failed: {name} is held, nothing was changed: {held.reason}: {held.message}", file=sys.stderr)
        return EXIT_FAILED
    versions = kube.list_versions(client, namespace=namespace, model=model)
    changes = staging.stage_changes(versions, target=name, stage=stage)
    kube.set_stages(client, namespace=namespace, stages=changes)
    for changed, new in changes.items():
        print(f"modelversion/{changed}: spec.stage = {new}", file=sys.stderr)
    if args.no_wait:
        return EXIT_OK
    verdict = _wait(client, namespace, name, model, stage, timeout=args.timeout, progress=sys.stderr)
    code = {"done": EXIT_OK, "failed": EXIT_FAILED}.get(verdict.state, EXIT_TIMEOUT)
    result = {"version": name, "model": model, "stage": stage.value, "outcome": verdict.state,
              "reason": verdict.reason, "message": verdict.message}  # fmt: skip
    if args.output == "table":
        word = {"done": "done", "failed": "failed"}.get(verdict.state, "timed out")
        out = sys.stdout if code == EXIT_OK else sys.stderr
        print(f"{word}: {name} {stage.value}: {verdict.reason}: {verdict.message}", file=out)
    else:
        print(render(result, output=args.output))
    return code


def _wait(client: Any, namespace: str, name: str, model: str, stage: Stage, *, timeout: float,
          progress: TextIO) -> Verdict:  # fmt: skip
    """Poll until the verdict is done or failed, or the timeout passes (then the last
    waiting verdict). A progress line on a terminal only: a pipe gets the result alone."""
    tty = progress.isatty()
    start = time.monotonic()
    verdict = Verdict("waiting", "NotObserved", "")
    while True:
        version = kube.read_version(client, namespace=namespace, name=name)
        if version is None:
            return Verdict("failed", "Deleted", f"ModelVersion {name} was deleted")
        selector = kube.read_service_selector(client, namespace=namespace, name=model)
        verdict = promotion_verdict(version, selector, target=stage)
        elapsed = time.monotonic() - start
        if tty:
            line = f"\r[{elapsed:5.0f}s] {name}: {verdict.reason}: {verdict.message}"[:200]
            progress.write(line.ljust(80) + ("\n" if verdict.state != "waiting" else ""))
            progress.flush()
        if verdict.state != "waiting":
            return verdict
        if elapsed >= timeout:
            if tty:
                progress.write("\n")
            return Verdict("timeout", verdict.reason, f"after {timeout:.0f}s: {verdict.message}")
        time.sleep(1.0)


if __name__ == "__main__":
    sys.exit(main())
