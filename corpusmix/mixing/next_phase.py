"""The next phase's mixture, proposed from the per-source loss a trainer logged (``monitor.log``).

A run trains phase after phase; phase boundaries are its restart points (the mixed shards
end there, and nothing before a boundary depends on the weights after it). When the log
shows the run has reached the start of phase q, ``propose`` reads the records up to that
point, asks the spec's policy (``recommend``: MixMonitor's EMA thresholds, or DoReMi's excess
loss over a reference run) what each source needs, applies that to the weights the plan
has for phase q (a source phase q leaves out stays out), clips the result to the repetition
caps over the whole plan, and writes the proposal as ``<storage>/next_phase/<id>.json``,
``id`` being a digest of its content, so a name always means the same weights.

Nothing changes the spec by itself. A person accepts a proposal by naming it as phase q's
weights, ``weights: {proposal: next_phase/<id>}``; the plan reads the file (and refuses one
whose content no longer matches its name), and the build re-plans: the shards of the phases
before q stay byte-identical, and q's follow the new weights.
"""

from __future__ import annotations

from pathlib import Path

import orjson

from corpusmix.core.spec import NEXT_PHASE, LoadedSpec, canonical_hash
from corpusmix.core.storage import atomic_write_bytes
from corpusmix.mixing.recommend import clip_to_caps, predicted_epochs, proposed_weights, recommend
from corpusmix.trainer.monitor_log import read_log

DIR = "next_phase"


class NotYet(ValueError):
    """The log has not reached a restart point: there is no next phase to propose yet."""


def read_records(path: Path) -> list[dict]:
    """The monitor log's records (``trainer.monitor_log.read_log``), or a message naming the file and the fix."""
    if not path.is_file():
        raise NotYet(f"no monitor log at {path} (monitor.log): start training with a SourceLossMonitor "
                     "writing there (corpusmix.trainer.monitor)")
    return read_log(path)


def reached_phase(plan: dict, records: list[dict]) -> int | None:
    """The latest phase (index >= 1) whose start the run has reached, or None before the first boundary."""
    seen = records[-1]["tokens"] if records else 0
    started = [q for q, ph in enumerate(plan["phases"]) if q >= 1 and ph["start"] <= seen]
    return started[-1] if started else None


def phase_shares(plan: dict, q: int) -> dict[str, float]:
    """Phase q's planned shares (its quotas over its tokens)."""
    quotas = plan["phases"][q]["quotas"]
    total = sum(quotas.values())
    return {s: quotas[s] / total for s in plan["sources"]}


def keeps_trained_shards(plan: dict) -> tuple[bool, str]:
    """Whether accepting new weights for a later phase leaves the trained phases' shards as they are."""
    schedule = plan["schedule"]
    if schedule["type"] != "phases":
        return False, f"a {schedule['type']} schedule has one phase: there is no later phase to re-plan"
    if schedule.get("transition", "step") != "step":
        return False, ("transition: linear moves each phase's shares toward the next one's, so new weights for "
                       "phase q change the end of phase q-1: its shards would change")
    if plan["renormalized"]:
        return False, ("the caps renormalised the shares (on_over_cap: cap_and_renormalize), over the whole "
                       "budget: new weights can move them in earlier phases too")
    return True, "step transitions and no renormalisation under the caps: the plan up to phase q is unchanged"


def restart_reached(loaded: LoadedSpec, plan: dict) -> tuple[int, list[dict]]:
    """The phase whose start (a restart point) the run's log has reached, and the records up to it;
    ``NotYet`` (saying where the run is and where the next point lies) before the first."""
    if loaded.spec.monitor.log is None:
        raise ValueError("monitor.log is not set: name the trainer's monitor log in the spec")
    log = loaded.resolve(loaded.spec.monitor.log)
    records = read_records(log)
    q = reached_phase(plan, records)
    if q is None:
        seen = records[-1]["tokens"] if records else 0
        first = plan["phases"][1]["start"] if len(plan["phases"]) > 1 else None
        raise NotYet(f"{log}: the run has seen {seen:,} tokens; the first restart point (phase boundary) is "
                     + (f"at {first:,.0f}" if first is not None else "none: the schedule has one phase"))
    return q, [r for r in records if r["tokens"] <= plan["phases"][q]["start"]]


NAMING = ("id", "name", "accept")  # what a proposal's id is made from, so not part of its content


def content_id(content: dict) -> str:
    """A proposal's id: its content's digest, so a name always stands for the same weights."""
    return canonical_hash(content)[:16]


def propose(loaded: LoadedSpec) -> dict:
    """The proposal for the phase the run has reached (``NotYet`` before the first boundary), from the
    published plan, written to ``<storage>/next_phase/<id>.json`` (atomic; an identical proposal is the
    same file)."""
    from corpusmix.mixture.plan import load_plan

    plan, plan_manifest = load_plan(loaded)
    plan_version = plan_manifest["version"]
    m = loaded.spec.monitor
    q, used = restart_reached(loaded, plan)
    log = loaded.resolve(m.log)
    start = plan["phases"][q]["start"]
    # validation has refused doremi without a reference
    reference = read_records(loaded.resolve(m.reference)) if m.policy == "doremi" else None
    planned = phase_shares(plan, q)
    recs = recommend(used, planned, m, reference)
    sources = plan["sources"]
    phase_tokens = plan["phases"][q]["end"] - start
    other = {s: sum(ph["quotas"][s] for i, ph in enumerate(plan["phases"]) if i != q) for s in sources}
    available = {s: plan["per_source"][s]["available"] for s in sources}
    weights, binding = clip_to_caps(proposed_weights(recs), other, phase_tokens, available, plan["max_epochs"])
    keeps, why = keeps_trained_shards(plan)
    body = {
        "phase": plan["phases"][q]["name"], "phase_index": q, "restart_tokens": start,
        "restart_sample": int(start // plan["seq_len"]), "policy": m.policy, "settings": m.model_dump(mode="json"),
        "log": {"path": str(log), "records": len(used), "tokens": used[-1]["tokens"] if used else 0,
                "exact": all(r.get("exact", True) for r in used),
                "sha256": canonical_hash(used)},
        "reference": None if reference is None else {"path": str(loaded.resolve(m.reference)),
                                                     "records": len(reference)},
        "mixture_plan_version": plan_version,
        "trained": phase_shares(plan, q - 1), "planned": planned,
        "recommendations": [{"source": r.source, "action": r.action, "reason": r.reason, "planned": r.current,
                             "policy_weight": r.proposed, "weight": weights[r.source], "counted_intervals": r.counted,
                             "ema_prev": r.ema_prev, "ema_now": r.ema_now, "change": r.change, "loss": r.loss,
                             "reference": r.reference, "excess": r.excess} for r in recs],
        "weights": weights, "binding_caps": binding,
        "epochs_planned": {s: plan["per_source"][s]["epochs"] for s in sources},
        "epochs_predicted": predicted_epochs(weights, other, phase_tokens, available),
        "keeps_trained_shards": keeps, "keeps_trained_shards_why": why,
    }
    pid = content_id(body)
    body |= {"id": pid, "name": f"{NEXT_PHASE}{pid}",
             "accept": f"mixture.schedule.phases[{q}].weights: {{proposal: {NEXT_PHASE}{pid}}}"}
    path = proposal_path(loaded, pid)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, orjson.dumps(body, option=orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2))
    return body


def proposal_path(loaded: LoadedSpec, pid: str) -> Path:
    return loaded.storage_root / DIR / f"{pid}.json"


def load_proposal(loaded: LoadedSpec, name: str) -> dict:
    """An accepted proposal by its name (``next_phase/<id>``), checked against its id: the weights a
    name stands for can never change under a spec that names them."""
    pid = name[len(NEXT_PHASE):]
    path = proposal_path(loaded, pid)
    if not path.is_file():
        raise FileNotFoundError(f"the schedule names {name} and {path} does not exist: materialize "
                                "next_phase_proposal (or run corpusmix next-phase) and copy its name")
    body = orjson.loads(path.read_bytes())
    if content_id({k: v for k, v in body.items() if k not in NAMING}) != pid:
        raise ValueError(f"{path}: its content does not match its name {name} (edited or damaged); restore it or "
                         "make a new proposal")
    return body


def render(body: dict) -> str:
    """The proposal as text: per source, the verdict and its reason; the weights of the phase trained,
    those planned for the next one, and those proposed for it."""
    lines = [f"next phase {body['phase']!r} (restart at token {body['restart_tokens']:,.0f}, sample "
             f"{body['restart_sample']:,}): policy {body['policy']}, {body['log']['records']} logged intervals up to "
             f"{body['log']['tokens']:,} tokens" + ("" if body["log"]["exact"] else " (per-sample estimates)"),
             f"{'source':12} {'action':18} {'trained':>8} {'planned':>8} {'proposed':>8} {'epochs':>7}  reason"]
    for r in body["recommendations"]:
        lines.append(f"{r['source']:12} {r['action']:18} {body['trained'][r['source']]:8.4f} "
                     f"{r['planned']:8.4f} {r['weight']:8.4f} "
                     f"{body['epochs_predicted'][r['source']]:7.3f}  {r['reason']}")
    if body["binding_caps"]:
        lines.append(f"at the repetition cap: {', '.join(body['binding_caps'])}")
    lines.append(("trained shards kept byte-identical: " if body["keeps_trained_shards"] else
                  "WARNING, trained shards would change: ") + body["keeps_trained_shards_why"])
    lines.append(f"accept: {body['accept']}")
    return "\n".join(lines)
