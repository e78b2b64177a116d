"""GPU classes and nodes (operator)."""

from __future__ import annotations

from fastapi import APIRouter, Response, status

from api.deps import Ctx, Operator, User
from api.retry import RetryRoute
from api.routers.params import Cursor, Limit
from api.schemas.common import PROBLEM_RESPONSES, ClassName, NodeName, Page
from api.schemas.inventory import (
    GpuClassCreate,
    GpuClassPublic,
    GpuClassUpdate,
    NodeCreate,
    NodePublic,
    NodeUpdate,
)
from scheduler.services import gpu_classes, nodes
from scheduler.tables import GpuClassRow

router = APIRouter(
    prefix="/v1", tags=["inventory"], responses=PROBLEM_RESPONSES, route_class=RetryRoute
)


def _class_public(row: GpuClassRow, summary: dict[str, tuple[int, int, int]]) -> GpuClassPublic:
    n, g, q = summary.get(row.name, (0, 0, 0))
    return GpuClassPublic.of(row, nodes=n, gpus=g, guaranteed=q)


@router.post("/gpu-classes", status_code=status.HTTP_201_CREATED, response_model=GpuClassPublic)
def create_gpu_class(body: GpuClassCreate, ctx: Ctx, who: Operator) -> GpuClassPublic:
    with ctx.write() as s:
        row = gpu_classes.create(s, who, ctx.clock.now(), **body.model_dump())
        return _class_public(row, gpu_classes.summary(s))


@router.get("/gpu-classes", response_model=Page[GpuClassPublic])
def list_gpu_classes(
    ctx: Ctx, who: User, limit: Limit = 50, cursor: Cursor = None
) -> Page[GpuClassPublic]:
    with ctx.read() as s:
        page = gpu_classes.list_page(s, limit=limit, cursor=cursor)
        summary = gpu_classes.summary(s)
        return Page(
            items=[_class_public(r, summary) for r in page.items], next_cursor=page.next_cursor
        )


@router.get("/gpu-classes/{name}", response_model=GpuClassPublic)
def get_gpu_class(name: ClassName, ctx: Ctx, who: User) -> GpuClassPublic:
    with ctx.read() as s:
        return _class_public(gpu_classes.get(s, name), gpu_classes.summary(s))


@router.patch("/gpu-classes/{name}", response_model=GpuClassPublic)
def update_gpu_class(
    name: ClassName, body: GpuClassUpdate, ctx: Ctx, who: Operator
) -> GpuClassPublic:
    with ctx.write() as s:
        row = gpu_classes.update(
            s, who, ctx.clock.now(), name, **body.model_dump(exclude_unset=True)
        )
        return _class_public(row, gpu_classes.summary(s))


@router.delete("/gpu-classes/{name}", status_code=status.HTTP_204_NO_CONTENT)
def delete_gpu_class(name: ClassName, ctx: Ctx, who: Operator) -> Response:
    with ctx.write() as s:
        gpu_classes.delete(s, who, ctx.clock.now(), name)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/nodes", status_code=status.HTTP_201_CREATED, response_model=NodePublic)
def create_node(body: NodeCreate, ctx: Ctx, who: Operator) -> NodePublic:
    with ctx.write() as s:
        row = nodes.create(s, who, ctx.clock.now(), **body.model_dump())
        out = NodePublic.of(row)
    ctx.replan("node added")
    return out


@router.get("/nodes", response_model=Page[NodePublic])
def list_nodes(
    ctx: Ctx,
    who: Operator,
    limit: Limit = 50,
    cursor: Cursor = None,
    gpu_class: ClassName | None = None,
) -> Page[NodePublic]:
    with ctx.read() as s:
        page = nodes.list_page(s, limit=limit, cursor=cursor, gpu_class=gpu_class)
        return Page(
            items=[NodePublic.of(r, in_use=nodes.active_gpus_on(s, r.name)) for r in page.items],
            next_cursor=page.next_cursor,
        )


@router.get("/nodes/{name}", response_model=NodePublic)
def get_node(name: NodeName, ctx: Ctx, who: Operator) -> NodePublic:
    with ctx.read() as s:
        return NodePublic.of(nodes.get(s, name), in_use=nodes.active_gpus_on(s, name))


@router.patch("/nodes/{name}", response_model=NodePublic)
def update_node(name: NodeName, body: NodeUpdate, ctx: Ctx, who: Operator) -> NodePublic:
    with ctx.write() as s:
        row = nodes.update(s, who, ctx.clock.now(), name, **body.model_dump(exclude_unset=True))
        out = NodePublic.of(row, in_use=nodes.active_gpus_on(s, name))
    ctx.replan("node changed")
    return out


@router.post(
    "/nodes/{name}/drain", response_model=NodePublic, summary="No new reservations on the node"
)
def drain_node(name: NodeName, ctx: Ctx, who: Operator) -> NodePublic:
    with ctx.write() as s:
        row = nodes.set_drained(s, who, ctx.clock.now(), name, True)
        out = NodePublic.of(row, in_use=nodes.active_gpus_on(s, name))
    ctx.replan("node drained")
    return out


@router.post(
    "/nodes/{name}/undrain", response_model=NodePublic, summary="The node takes reservations again"
)
def undrain_node(name: NodeName, ctx: Ctx, who: Operator) -> NodePublic:
    with ctx.write() as s:
        row = nodes.set_drained(s, who, ctx.clock.now(), name, False)
        out = NodePublic.of(row, in_use=nodes.active_gpus_on(s, name))
    ctx.replan("node undrained")
    return out


@router.delete("/nodes/{name}", status_code=status.HTTP_204_NO_CONTENT)
def delete_node(name: NodeName, ctx: Ctx, who: Operator) -> Response:
    with ctx.write() as s:
        nodes.delete(s, who, ctx.clock.now(), name)
    ctx.replan("node removed")
    return Response(status_code=status.HTTP_204_NO_CONTENT)
