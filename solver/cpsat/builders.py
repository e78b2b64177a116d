"""The CP-SAT model of one class, one small builder per rule, and its variable container.

Rules: windows (start domains), capacity (GPUs of the class at every moment), big items (a
gang member holding more than half a node has that node to itself among big members), whole
nodes (a member taking a whole node needs one that no running work holds), tenant
limit, guaranteed quota, budget, reclaim of running borrowed tails (their end may move
earlier, at a penalty), stability (same start as the previous plan). The objective is built
from exchangeable terms in :func:`add_objective`; it matches :func:`solver.objective.score`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ortools.sat.python import cp_model

from solver.cpsat.instance import ClassInstance, Segment, clip

IntervalVar = cp_model.IntervalVar
IntVar = cp_model.IntVar


@dataclass
class ItemVars:
    present: IntVar
    start: IntVar
    earliness: IntVar
    interval: IntervalVar
    guaranteed: IntVar | None = None  # None: the label follows from the quota
    g_interval: IntervalVar | None = None
    same: IntVar | None = None


@dataclass
class TailVars:
    end: IntVar
    preempted: IntVar
    interval: IntervalVar


@dataclass
class ModelVars:
    """Variables of one class model, indexed like the instance's items and tails."""

    items: list[ItemVars] = field(default_factory=list)
    tails: list[TailVars] = field(default_factory=list)
    exact: bool = True  # False when over-used quotas forced a conservative model
    constant: int = 0  # objective offset (penalties the model cannot avoid)


def add_items(m: cp_model.CpModel, inst: ClassInstance, v: ModelVars) -> None:
    """Windows: each item starts at a grid boundary in its window, or is left out."""
    h = inst.horizon_units
    for k, it in enumerate(inst.items):
        x = m.new_bool_var(f"x{k}")
        s = m.new_int_var_from_domain(cp_model.Domain.from_values(it.domain), f"s{k}")
        e = m.new_int_var(0, h, f"e{k}")
        m.add(e <= h - s)
        m.add(e <= h * x)
        iv = m.new_optional_fixed_size_interval_var(s, it.size, x, f"i{k}")
        v.items.append(ItemVars(x, s, e, iv))


def add_tails(m: cp_model.CpModel, inst: ClassInstance, v: ModelVars) -> None:
    """Reclaim: a running borrowed reservation past its minimum runtime may end early."""
    for k, t in enumerate(inst.tails):
        end = m.new_int_var(t.start, t.end, f"te{k}")
        pre = m.new_bool_var(f"tp{k}")
        m.add(end <= t.end - 1).only_enforce_if(pre)
        m.add(end == t.end).only_enforce_if(~pre)
        iv = m.new_interval_var(t.start, end - t.start, end, f"ti{k}")
        v.tails.append(TailVars(end, pre, iv))


def _fixed(
    m: cp_model.CpModel, segments: list[Segment], name: str
) -> tuple[list[IntervalVar], list[int]]:
    ivs: list[IntervalVar] = []
    demands: list[int] = []
    for j, (a, b, amount) in enumerate(segments):
        if b > a and amount > 0:
            ivs.append(m.new_fixed_size_interval_var(a, b - a, f"{name}{j}"))
            demands.append(amount)
    return ivs, demands


def _cumulative(
    m: cp_model.CpModel,
    v: ModelVars,
    name: str,
    cap: int,
    fixed: list[Segment],
    variable: list[tuple[IntervalVar, int]],
    tails: list[tuple[IntervalVar, int]],
) -> None:
    """``cap`` at every moment over fixed usage, the items' and the reclaimable tails'."""
    if not variable:
        return
    profile, over = clip(fixed, cap)
    if over:
        v.exact = False
    ivs, demands = _fixed(m, profile, name)
    for iv, d in variable + tails:
        if d > 0:
            ivs.append(iv)
            demands.append(d)
    if sum(demands) <= cap:
        return  # never binding
    m.add_cumulative(ivs, demands, cap)


def add_capacity(m: cp_model.CpModel, inst: ClassInstance, v: ModelVars) -> None:
    """GPUs of the class (schedulable nodes) at every moment."""
    items = [(iv.interval, it.req.gpus) for iv, it in zip(v.items, inst.items, strict=True)]
    tails = [(tv.interval, t.gpus) for tv, t in zip(v.tails, inst.tails, strict=True)]
    _cumulative(m, v, "cap", inst.capacity, inst.fixed, items, tails)


def add_big_items(m: cp_model.CpModel, inst: ClassInstance, v: ModelVars) -> None:
    """Two gang members that each need more than half a node never share one: count nodes."""
    if inst.node_size is None:
        return
    items = [(iv.interval, it.big) for iv, it in zip(v.items, inst.items, strict=True) if it.big]
    tails = [(tv.interval, t.big) for tv, t in zip(v.tails, inst.tails, strict=True) if t.big]
    _cumulative(m, v, "big", inst.nodes, inst.fixed_big, items, tails)


def add_whole_nodes(m: cp_model.CpModel, inst: ClassInstance, v: ModelVars) -> None:
    """A gang member that takes a whole node needs a node no running work holds."""
    if inst.node_size is None:
        return
    items = [
        (iv.interval, it.req.nodes_needed)
        for iv, it in zip(v.items, inst.items, strict=True)
        if it.req.gpus_per_node == inst.node_size
    ]
    _cumulative(m, v, "whole", inst.nodes, inst.fixed_touched, items, [])


def add_limits(m: cp_model.CpModel, inst: ClassInstance, v: ModelVars) -> None:
    """Each tenant's limit at every moment."""
    for name, tp in inst.tenants.items():
        items = [(v.items[k].interval, inst.items[k].req.gpus) for k in tp.items]
        tails = [(v.tails[k].interval, inst.tails[k].run.gpus) for k in tp.tails]
        _cumulative(m, v, f"lim_{name}_", tp.limit, tp.fixed_all, items, tails)


def add_guarantees(m: cp_model.CpModel, inst: ClassInstance, v: ModelVars) -> None:
    """Guaranteed reservations of a tenant fit its guaranteed quota; a non-preemptible request
    must be guaranteed, one larger than the quota must borrow."""
    for name, tp in inst.tenants.items():
        variable = []
        for k in tp.items:
            it, iv = inst.items[k], v.items[k]
            if not it.can_guarantee:
                continue  # placed only as borrowed (can_borrow holds: static checks passed)
            if not it.can_borrow or tp.guaranteed >= tp.limit:
                variable.append((iv.interval, it.req.gpus))  # always guaranteed when placed
                continue
            g = m.new_bool_var(f"g{k}")
            m.add_implication(g, iv.present)
            iv.guaranteed = g
            iv.g_interval = m.new_optional_fixed_size_interval_var(iv.start, it.size, g, f"gi{k}")
            variable.append((iv.g_interval, it.req.gpus))
        _cumulative(m, v, f"gua_{name}_", tp.guaranteed, tp.fixed_guaranteed, variable, [])


def add_budgets(m: cp_model.CpModel, inst: ClassInstance, v: ModelVars) -> None:
    """GPU-seconds planned per tenant within the budget left."""
    for tp in inst.tenants.values():
        if tp.budget_gpu_s is None or not tp.items:
            continue
        costs = [inst.items[k].req.gpus * inst.items[k].req.duration_s for k in tp.items]
        if sum(costs) <= tp.budget_gpu_s:
            continue
        m.add(
            sum(c * v.items[k].present for c, k in zip(costs, tp.items, strict=True))
            <= int(tp.budget_gpu_s)
        )


def add_stability(m: cp_model.CpModel, inst: ClassInstance, v: ModelVars) -> None:
    """``same`` holds only if the item keeps its previous start."""
    for k, it in enumerate(inst.items):
        if it.prev_unit is None:
            v.constant -= it.move
            continue
        same = m.new_bool_var(f"same{k}")
        m.add(v.items[k].start == it.prev_unit).only_enforce_if(same)
        m.add_implication(same, v.items[k].present)
        v.items[k].same = same
        v.constant -= it.move


def add_objective(m: cp_model.CpModel, inst: ClassInstance, v: ModelVars) -> None:
    """Earliness of weighted GPU-hours, minus preemption and move penalties."""
    terms = [it.coef * iv.earliness for it, iv in zip(inst.items, v.items, strict=True)]
    terms += [
        it.move * iv.same for it, iv in zip(inst.items, v.items, strict=True) if iv.same is not None
    ]
    terms += [-t.penalty * tv.preempted for t, tv in zip(inst.tails, v.tails, strict=True)]
    m.maximize(sum(terms) + v.constant)


BUILDERS = (
    add_items,
    add_tails,
    add_capacity,
    add_big_items,
    add_whole_nodes,
    add_limits,
    add_guarantees,
    add_budgets,
    add_stability,
    add_objective,
)


def build_model(inst: ClassInstance) -> tuple[cp_model.CpModel, ModelVars]:
    """The model of ``inst``: every builder in turn."""
    m = cp_model.CpModel()
    v = ModelVars()
    for builder in BUILDERS:
        builder(m, inst, v)
    return m, v
