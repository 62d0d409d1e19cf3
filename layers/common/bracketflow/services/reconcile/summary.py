"""Summarize: a reconcile run's repairs counted, and the GTTs no open bracket owns reported or cancelled."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from bracketflow import metrics_names
from bracketflow.adapters.broker import get_broker
from bracketflow.adapters.broker.port import GttReport
from bracketflow.adapters.dynamo import reconcile as snapshots
from bracketflow.adapters.dynamo.brackets import BracketRepository
from bracketflow.adapters.dynamo.gtt_claims import claimant
from bracketflow.domain.states import is_terminal
from bracketflow.observability import logger, metrics
from bracketflow.services.reconcile.repairs import cancel_gtt
from bracketflow.services.reconcile.snapshot import load_view, utc_now
from bracketflow.settings import get_settings

ORPHAN_MIN_AGE_S = 300


def summarize(run_id: str, results: list[dict[str, Any]], now: datetime | None = None) -> dict[str, Any]:
    """Summary: repairs counted, GTTs no open bracket owns reported (and cancelled when configured)."""
    view = load_view(run_id)
    at = now or utc_now()
    owned = {str(b.gtt_id) for b in BracketRepository().list_open() if b.gtt_id}
    unowned = [g for g in view.gtts.values() if g.status == "active" and str(g.gtt_id) not in owned]
    # Ours but finished with: cancelled (by default) on a fresh look. The rest are orphans: reported and alarmed,
    # cancelled only when configured (they may be the trader's own GTTs).
    finished = [g for g in unowned if _no_longer_protecting(str(g.gtt_id))]
    orphans = [g for g in unowned if g not in finished]
    finished_cancelled: list[str] = []
    if finished and get_settings().reconcile_cancel_finished_gtts:
        finished_cancelled = _cancel_finished(finished)
    cancelled: list[str] = []
    if orphans and get_settings().reconcile_cancel_orphan_gtts:
        cancelled = _cancel_orphans(orphans, at)
    repairs: dict[str, int] = {}
    for result in results:
        repair = (result or {}).get("repair")
        if repair:
            repairs[repair] = repairs.get(repair, 0) + 1
    if orphans:
        metrics.add_metric(name="OrphanGtts", unit="Count", value=len(orphans))
        logger.warning("GTTs at the broker that no open bracket owns", extra={"gtt_ids": [g.gtt_id for g in orphans]})
    errors = [x for x in results if (x or {}).get("error")]
    summary = {
        "run_id": run_id,
        "brackets": len(results),
        "repairs": repairs,
        "errors": len(errors),
        "orphan_gtts": [str(g.gtt_id) for g in orphans],
        "orphan_gtts_cancelled": cancelled,
        "finished_gtts": [str(g.gtt_id) for g in finished],
        "finished_gtts_cancelled": finished_cancelled,
    }
    _record_last_run(summary, results, at)
    return summary


LAST_RUN_REPAIRED_KEPT = 50  # the brackets a run repaired that its record lists (the counts cover them all)


def _record_last_run(summary: dict[str, Any], results: list[dict[str, Any]], at: datetime) -> None:
    """Keep the run's summary for the console's status panel: when it ran, and which brackets it repaired (with
    their account, so each trader sees only their own). Never fails the run: the repairs are done already."""
    repaired: list[dict[str, Any]] = []
    for result in results:
        if (result or {}).get("repair") and len(repaired) < LAST_RUN_REPAIRED_KEPT:
            bracket = BracketRepository().get(str(result["bracket_id"]))
            account = str(bracket.account_id) if bracket else ""
            repaired.append(
                {"bracket_id": str(result["bracket_id"]), "repair": result["repair"], "account_id": account}
            )
    run = {
        "run_id": summary["run_id"],
        "at": at.astimezone(UTC).isoformat().replace("+00:00", "Z"),
        "brackets": summary["brackets"],
        "repairs": summary["repairs"],
        "errors": summary["errors"],
        "orphan_gtts": len(summary["orphan_gtts"]),
        "repaired": repaired,
    }
    try:
        snapshots.put_last_run(run)
    except Exception:  # a convenience for the status panel: the repairs are recorded per bracket already
        logger.exception("the reconcile run's summary could not be kept for the status panel")


def _no_longer_protecting(gtt_id: str) -> bool:
    """A GTT one of our brackets claimed, whose bracket (read now) is finished or records a different GTT."""
    owner = claimant(gtt_id)
    if owner is None:
        return False
    bracket = BracketRepository().get(owner)
    return bracket is None or is_terminal(bracket.status) or (bool(bracket.gtt_id) and str(bracket.gtt_id) != gtt_id)


def _cancel_finished(gtts: list[GttReport]) -> list[str]:
    """Cancel the finished brackets' GTTs that are still live on a fresh look at the broker and still unneeded."""
    live = {str(g.gtt_id): g for g in get_broker().gtts()}
    cancelled = []
    for gtt in gtts:
        fresh = live.get(str(gtt.gtt_id))
        if fresh is None or fresh.status != "active" or not _no_longer_protecting(str(gtt.gtt_id)):
            continue
        cancel_gtt(gtt.gtt_id)
        cancelled.append(str(gtt.gtt_id))
    if cancelled:
        metrics.add_metric(name=metrics_names.FINISHED_GTTS_CANCELLED, unit="Count", value=len(cancelled))
        logger.warning("live GTTs of finished brackets cancelled", extra={"gtt_ids": cancelled})
    return cancelled


def _cancel_orphans(orphans: list[GttReport], now: datetime) -> list[str]:
    """Cancel orphans still unowned on a fresh look and old enough (a GTT placed moments ago may not be recorded)."""
    owned = {str(b.gtt_id) for b in BracketRepository().list_open() if b.gtt_id}
    broker = get_broker()
    live = {str(g.gtt_id): g for g in broker.gtts()}
    cancelled = []
    for gtt in orphans:
        fresh = live.get(str(gtt.gtt_id))
        if fresh is None or fresh.status != "active" or str(gtt.gtt_id) in owned:
            continue
        created = fresh.created_at or now
        if created.tzinfo is None:
            created = created.replace(tzinfo=UTC)
        if now - created < timedelta(seconds=ORPHAN_MIN_AGE_S):
            continue
        cancel_gtt(gtt.gtt_id)
        cancelled.append(str(gtt.gtt_id))
    return cancelled
