"""Usage: samples from the node agents in, accounting reports out."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Query, Response, status
from pydantic import AwareDatetime
from sqlalchemy.exc import IntegrityError

from api.deps import Agent, Ctx, User
from api.schemas.common import PROBLEM_RESPONSES, ClassName, TenantName
from api.schemas.usage import IngestPublic, SamplesIn, UsageReportPublic, to_csv
from metrics.server import observe_ingest
from scheduler.services import accounting, usage

router = APIRouter(prefix="/v1", tags=["usage"], responses=PROBLEM_RESPONSES)


@router.post(
    "/usage/samples",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=IngestPublic,
    summary="Node agents push GPU usage samples",
)
def push_samples(body: SamplesIn, ctx: Ctx, who: Agent) -> IngestPublic:
    limit = ctx.settings.usage_max_batch
    if len(body.samples) > limit:
        # 413, not 422: the agent halves its batch on 413 but drops a batch refused as invalid.
        raise HTTPException(
            413,
            f"samples: {len(body.samples)} in one push; at most {limit}",
        )
    batch = body.to_domain()
    try:
        with ctx.write() as s:
            result = usage.ingest(s, who, ctx.clock.now(), ctx.settings, batch)
    except IntegrityError:
        # Another push created one of these devices first (two agents claiming one node, or
        # two replicas): the rows exist now, so the same batch goes through on a second try.
        with ctx.write() as s:
            result = usage.ingest(s, who, ctx.clock.now(), ctx.settings, batch)
    observe_ingest(ctx, result)
    if result.replan:
        ctx.replan("idle reservation ended or made reclaimable")
    return IngestPublic.of(result)


@router.get(
    "/usage",
    response_model=UsageReportPublic,
    response_model_exclude_unset=True,
    summary="Allocated, used and idle GPU time; CSV with format=csv",
    responses={200: {"content": {"text/csv": {}}}},
)
def get_usage(
    ctx: Ctx,
    who: User,
    start: Annotated[
        AwareDatetime | None, Query(description="Default: start of this month (UTC).")
    ] = None,
    end: Annotated[AwareDatetime | None, Query(description="Default: now.")] = None,
    gpu_class: ClassName | None = None,
    tenant: Annotated[TenantName | None, Query(description="Operator only.")] = None,
    group_by: Annotated[
        str,
        Query(
            max_length=100,
            description="tenant, gpu_class, reservation, day, or several comma-separated.",
        ),
    ] = "tenant",
    output: Annotated[Literal["json", "csv"], Query(alias="format")] = "json",
) -> UsageReportPublic | Response:
    keys = accounting.parse_group_by(group_by)
    with ctx.read() as s:
        report = accounting.report(
            s,
            who,
            ctx.clock.now(),
            start=start,
            end=end,
            gpu_class=gpu_class,
            tenant=tenant,
            group_by=keys,
        )
    if output == "csv":
        name = f"gpupool-usage-{report.start:%Y%m%dT%H%M}-{report.end:%Y%m%dT%H%M}.csv"
        return Response(
            to_csv(report),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="{name}"'},
        )
    return UsageReportPublic.of(report)
