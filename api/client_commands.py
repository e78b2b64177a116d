"""The operator and tenant helpers of the command line: ``gpupool tenants|keys|quotas|classes|
nodes|requests|plan``, each a call to a running server's API (:mod:`api.client`)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated, Any

import typer

from api.client import ApiError, Client

if TYPE_CHECKING:
    from scheduler.cli import Cli

Url = Annotated[str, typer.Option("--url", envvar="GPUPOOL_URL", help="Server URL.")]
Token = Annotated[
    str,
    typer.Option(
        "--token",
        envvar="GPUPOOL_TOKEN",
        help="Operator token or tenant API key.",
        show_default=False,
    ),
]
DEFAULT_URL = "http://127.0.0.1:8080"


def _print(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, default=str))


def _call(url: str, token: str, method: str, path: str, body: Any = None, **params: Any) -> Any:
    if not token:
        raise typer.BadParameter(
            "no token: pass --token or set GPUPOOL_TOKEN", param_hint="--token"
        )
    with Client(url, token) as c:
        try:
            if method == "GET" and "all" in params:
                params.pop("all")
                return c.all_pages(path, **params)
            return c.call(
                method,
                path,
                json=body,
                params={k: v for k, v in params.items() if v is not None} or None,
            )
        except ApiError as exc:
            typer.echo(f"gpupool: error: {exc}", err=True)
            raise typer.Exit(1) from exc
        except Exception as exc:  # connection refused and the like: one line, non-zero exit
            typer.echo(f"gpupool: error: cannot reach {url}: {exc.__class__.__name__}", err=True)
            raise typer.Exit(1) from exc


def register(cli: Cli) -> None:
    root = cli.root

    tenants = typer.Typer(no_args_is_help=True, help="Tenants (operator).")
    root.add_typer(tenants, name="tenants")

    @tenants.command("list")
    def tenants_list(url: Url = DEFAULT_URL, token: Token = "") -> None:
        _print(_call(url, token, "GET", "/v1/tenants", all=True))

    @tenants.command("create")
    def tenants_create(
        name: str,
        display_name: Annotated[str, typer.Option()] = "",
        weight: Annotated[float, typer.Option()] = 1.0,
        url: Url = DEFAULT_URL,
        token: Token = "",
    ) -> None:
        _print(
            _call(
                url,
                token,
                "POST",
                "/v1/tenants",
                {"name": name, "display_name": display_name, "weight": weight},
            )
        )

    @tenants.command("deactivate")
    def tenants_deactivate(name: str, url: Url = DEFAULT_URL, token: Token = "") -> None:
        _print(_call(url, token, "POST", f"/v1/tenants/{name}/deactivate"))

    keys = typer.Typer(no_args_is_help=True, help="Tenant API keys (operator).")
    root.add_typer(keys, name="keys")

    @keys.command("issue")
    def keys_issue(
        tenant: str,
        name: Annotated[str, typer.Option()] = "",
        url: Url = DEFAULT_URL,
        token: Token = "",
    ) -> None:
        _print(_call(url, token, "POST", f"/v1/tenants/{tenant}/api-keys", {"name": name}))

    @keys.command("revoke")
    def keys_revoke(tenant: str, key_id: int, url: Url = DEFAULT_URL, token: Token = "") -> None:
        _print(_call(url, token, "DELETE", f"/v1/tenants/{tenant}/api-keys/{key_id}"))

    quotas = typer.Typer(no_args_is_help=True, help="Quotas (operator).")
    root.add_typer(quotas, name="quotas")

    @quotas.command("set")
    def quotas_set(
        tenant: str,
        gpu_class: str,
        guaranteed: Annotated[int, typer.Option()],
        limit: Annotated[int, typer.Option()],
        budget_gpu_hours: Annotated[float | None, typer.Option()] = None,
        budget_period: Annotated[str, typer.Option()] = "month",
        url: Url = DEFAULT_URL,
        token: Token = "",
    ) -> None:
        body = {
            "guaranteed": guaranteed,
            "limit": limit,
            "budget_gpu_hours": budget_gpu_hours,
            "budget_period": budget_period,
        }
        _print(_call(url, token, "PUT", f"/v1/tenants/{tenant}/quotas/{gpu_class}", body))

    @quotas.command("list")
    def quotas_list(url: Url = DEFAULT_URL, token: Token = "") -> None:
        _print(_call(url, token, "GET", "/v1/quotas"))

    classes = typer.Typer(no_args_is_help=True, help="GPU classes (operator).")
    root.add_typer(classes, name="classes")

    @classes.command("create")
    def classes_create(
        name: str,
        memory_gib: Annotated[int | None, typer.Option()] = None,
        url: Url = DEFAULT_URL,
        token: Token = "",
    ) -> None:
        _print(
            _call(url, token, "POST", "/v1/gpu-classes", {"name": name, "memory_gib": memory_gib})
        )

    @classes.command("list")
    def classes_list(url: Url = DEFAULT_URL, token: Token = "") -> None:
        _print(_call(url, token, "GET", "/v1/gpu-classes", all=True))

    nodes = typer.Typer(no_args_is_help=True, help="Static node inventory (operator).")
    root.add_typer(nodes, name="nodes")

    @nodes.command("add")
    def nodes_add(
        name: str, gpu_class: str, gpus: int, url: Url = DEFAULT_URL, token: Token = ""
    ) -> None:
        _print(
            _call(
                url,
                token,
                "POST",
                "/v1/nodes",
                {"name": name, "gpu_class": gpu_class, "gpus": gpus},
            )
        )

    @nodes.command("list")
    def nodes_list(url: Url = DEFAULT_URL, token: Token = "") -> None:
        _print(_call(url, token, "GET", "/v1/nodes", all=True))

    @nodes.command("drain")
    def nodes_drain(name: str, url: Url = DEFAULT_URL, token: Token = "") -> None:
        _print(_call(url, token, "POST", f"/v1/nodes/{name}/drain"))

    @nodes.command("undrain")
    def nodes_undrain(name: str, url: Url = DEFAULT_URL, token: Token = "") -> None:
        _print(_call(url, token, "POST", f"/v1/nodes/{name}/undrain"))

    reqs = typer.Typer(no_args_is_help=True, help="Requests (tenant key, or operator).")
    root.add_typer(reqs, name="requests")

    @reqs.command("submit")
    def requests_submit(
        gpu_class: str,
        gpus: int,
        duration: Annotated[str, typer.Argument(help="Seconds or ISO 8601, e.g. PT12H")],
        gpus_per_node: Annotated[int | None, typer.Option()] = None,
        not_before: Annotated[str | None, typer.Option()] = None,
        deadline: Annotated[str | None, typer.Option()] = None,
        tenant: Annotated[str | None, typer.Option(help="Operator only")] = None,
        url: Url = DEFAULT_URL,
        token: Token = "",
    ) -> None:
        body: dict[str, Any] = {
            "gpu_class": gpu_class,
            "gpus": gpus,
            "duration": int(duration) if duration.isdigit() else duration,
        }
        for key, value in (
            ("gpus_per_node", gpus_per_node),
            ("not_before", not_before),
            ("deadline", deadline),
            ("tenant", tenant),
        ):
            if value is not None:
                body[key] = value
        _print(_call(url, token, "POST", "/v1/requests", body))

    @reqs.command("list")
    def requests_list(
        state: Annotated[str | None, typer.Option()] = None,
        url: Url = DEFAULT_URL,
        token: Token = "",
    ) -> None:
        _print(_call(url, token, "GET", "/v1/requests", all=True, state=state))

    @reqs.command("show")
    def requests_show(request_id: int, url: Url = DEFAULT_URL, token: Token = "") -> None:
        _print(_call(url, token, "GET", f"/v1/requests/{request_id}"))

    @reqs.command("cancel")
    def requests_cancel(request_id: int, url: Url = DEFAULT_URL, token: Token = "") -> None:
        _print(_call(url, token, "POST", f"/v1/requests/{request_id}/cancel"))

    @root.command("plan")
    def plan(url: Url = DEFAULT_URL, token: Token = "") -> None:
        """The plan: all reservations of the next 7 days (operator)."""
        _print(_call(url, token, "GET", "/v1/plan"))
