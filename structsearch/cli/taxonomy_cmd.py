"""``structsearch taxonomy``: what one structure costs and how expressive it is."""

from __future__ import annotations

import argparse

from structsearch.cli._common import print_json

__all__ = ["register", "run"]

EXAMPLES = """examples:
  structsearch taxonomy btt --d-in 1024 --d-out 1024
  structsearch taxonomy "(1/2|1/4|1/4|1/4|1/2|1/4|0)" --json
  structsearch taxonomy low-rank:0.5 --symbolic
  structsearch taxonomy runs/demo/best.json --d-in 128
  structsearch taxonomy btt-moe:experts=8,k=2 --json
  structsearch taxonomy '{"alpha":1,"beta":0,"gamma":0,"delta":1,"epsilon":0,"phi":0,"rho":0}'
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "taxonomy",
        help="exact counts, omega/psi/nu and canonical form of one structure",
        description="Exact parameter and MAC counts, the taxonomy exponents (omega, psi, nu), "
        "the canonical flags and warnings for one structure, all read off its index graph.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "structure",
        metavar="THETA_OR_NAME",
        help="paper notation (a|b|g|d|e|f|r), a JSON object keyed alpha..rho, an exported spec file "
        "(its first spec), or a name: "
        "dense, low-rank[:r], kronecker, sum-kronecker[:r], btt[:r], monarch, tt[:r], btt-moe[:experts=E,k=K]",
    )
    parser.add_argument("--d-in", type=int, default=1024, metavar="N", help="input size (default 1024)")
    parser.add_argument("--d-out", type=int, default=None, metavar="M", help="output size (default: d-in)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    parser.add_argument("--symbolic", action="store_true", help="also show the symbolic formulas in d_in, d_out")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from structsearch.spec import load_spec
    from structsearch.taxonomy import analyze, symbolic_formulas

    d_out = args.d_in if args.d_out is None else args.d_out
    result = analyze(load_spec(args.structure), args.d_in, d_out)  # a name, a theta or an exported spec file
    symbolic = symbolic_formulas(result.spec) if args.symbolic else None
    if args.json:
        payload = result.to_json_dict()
        if symbolic is not None:
            payload = {**payload, "symbolic": symbolic}
        print_json(payload)
        return 0
    _render(result, symbolic)
    return 0


def _render(t, symbolic: dict[str, str] | None) -> None:
    from rich.table import Table

    from structsearch.cli._common import stdout_console

    console = stdout_console()
    title = f"{t.spec.paper}" + (f"  [bold]{t.name}[/]" if t.name else "") + f"  at {t.d_in} -> {t.d_out}"
    table = Table(title=title, show_header=True, header_style="bold")
    table.add_column("quantity")
    table.add_column("value", overflow="fold")
    sizes = "  ".join(f"{c}={v}" for c, v in t.dims.as_dict.items())
    table.add_row("class sizes", sizes)
    einsum = "einsum (x.A, then .B)" if t.moe is None else "einsum of one expert (rank one; rho = E experts)"
    table.add_row(einsum, "   ".join(t.einsum))
    table.add_row("cheapest order", f"{'; '.join(t.cheapest_order)}  ({t.cheapest_macs:,.0f} MACs/vector)")
    table.add_row("params", f"{t.params:,}  ({t.params / (t.d_in * t.d_out):.3g} x dense)")
    per = "token" if t.moe is not None else "vector"
    table.add_row(f"MACs / {per}", f"{t.macs:,}  ({t.macs / t.dense_macs:.3g} x dense)")
    if t.moe is not None:
        m = t.moe
        table.add_row("experts (E), k", f"{m.experts} rank-one terms, {m.k} per token")
        table.add_row("one expert", f"{m.params_per_expert:,} params, {m.macs_per_expert:,} MACs")
        table.add_row("router", f"{m.router_params:,} params, {m.router_macs:,} MACs / token")
        table.add_row("all experts (rank-E BTT)", f"{m.macs_all_experts:,} MACs / token")
        table.add_row("omega at this size", f"{m.omega_at_size:.4g}  (log_d MACs/params; < 0: no sharing at all)")
        table.add_row("omega, psi, nu meaning", m.note)
    table.add_row("FLOPs / vector", f"{t.flops:,}")
    table.add_row("omega (sharing)", f"{t.omega:.4g}")
    table.add_row("psi (rank)", f"{t.psi:.4g}")
    table.add_row("nu (compute)", f"{t.nu:.4g}")
    table.add_row("rank bound", f"{t.rank_bound:,}  ({t.rank_bound_reason})")
    table.add_row("padding", f"in {t.dims.padding_in:.2%}, out {t.dims.padding_out:.2%}")
    canonical = "[green]yes[/]" if t.canonical else "[red]no[/]"
    if t.canonical_equivalent is not None:
        canonical += f"  equivalent: {t.canonical_equivalent.paper}"
    table.add_row("canonical", canonical)
    if symbolic:
        for key, value in symbolic.items():
            table.add_row(f"[dim]{key}[/]", value)
    console.print(table)
    for warning in t.warnings:
        console.print(f"[yellow]warning:[/] {warning}", highlight=False)
