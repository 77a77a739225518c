"""``generate`` and ``validate``: synthetic tables, and validating or cleaning a table."""

from __future__ import annotations

from ..errors import ParameterError
from ._common import _client, _scheduler_arg, _so, print_json


def _add_generate(sub):
    p = sub.add_parser("generate", help="write synthetic transactions or interactions as parquet")
    p.add_argument("table", choices=["transactions", "interactions"])
    p.add_argument("--rows", type=int, required=True, help="number of rows")
    p.add_argument("--out", required=True, help="output directory (replaced atomically)")
    p.add_argument("--partitions", type=int, default=None, help="number of parquet files")
    p.add_argument("--seed", type=int, default=0)
    _scheduler_arg(p)


def _run_generate(args):
    from ..data import make_interactions, make_transactions
    from ..storage import write_parquet

    make = make_transactions if args.table == "transactions" else make_interactions
    ddf = make(args.rows, npartitions=args.partitions, seed=args.seed)
    with _client(args) as client:
        write_parquet(ddf, args.out, storage_options=_so(args), client=client)
    print_json({"table": args.table, "rows": args.rows, "partitions": ddf.npartitions, "out": args.out})


def _add_validate(sub):
    p = sub.add_parser(
        "validate",
        help="validate (and with --out/--quarantine, clean) transactions or interactions; JSON report",
    )
    p.add_argument("table", choices=["transactions", "interactions"])
    p.add_argument("input", help="parquet or CSV: path, directory, glob or fsspec URL")
    p.add_argument("--out", default=None, help="directory for the clean rows (parquet, replaced atomically)")
    p.add_argument(
        "--quarantine", default=None, help="directory for the quarantined rows with a reason column"
    )
    p.add_argument("--format", choices=["parquet", "csv"], default=None, help="default: from the file name")
    p.add_argument(
        "--map",
        action="append",
        default=[],
        metavar="YOURS=CANONICAL",
        help="column mapping, repeatable: --map txn=transaction_id --map ts=timestamp",
    )
    p.add_argument(
        "--time-unit", default=None, choices=["s", "ms", "us", "ns"], help="unit of a numeric timestamp"
    )
    p.add_argument(
        "--categories",
        choices=["normalize", "quarantine"],
        default="normalize",
        help="case/whitespace variants of a category: repair in place (default) or quarantine",
    )
    p.add_argument("--no-duplicates", action="store_true", help="skip the duplicate-key check (no shuffle)")
    p.add_argument(
        "--read-twice",
        action="store_true",
        help="with --out: find duplicates before writing (two reads; disk peak the larger of output and "
        "shuffle scratch, not their sum)",
    )
    _scheduler_arg(p)


def _run_validate(args):
    from ..data import clean, read_table, validate
    from ..schema import SCHEMAS

    mapping = {}
    for item in args.map:
        if "=" not in item:
            raise ParameterError(f"--map takes YOURS=CANONICAL, e.g. --map txn=transaction_id; got {item!r}.")
        k, v = item.split("=", 1)
        mapping[k] = v
    if (args.out is None) != (args.quarantine is None):
        raise ParameterError("give both --out and --quarantine (to clean), or neither (to validate only).")
    schema = SCHEMAS[args.table]
    # the schema is checked on metadata here, before a cluster starts or anything is written
    ddf = read_table(
        args.input,
        schema,
        format=args.format,
        columns=mapping or None,
        time_unit=args.time_unit,
        storage_options=_so(args),
    )
    kw = {"categories": args.categories, "duplicates": not args.no_duplicates, "time_unit": args.time_unit}
    with _client(args) as client:
        if args.out is None:
            report = validate(ddf, schema, client=client, **kw)
        else:
            report = clean(
                ddf,
                schema,
                out=args.out,
                quarantine_out=args.quarantine,
                read_once=not args.read_twice,
                storage_options=_so(args),
                client=client,
                **kw,
            ).report
    out = report.to_dict()
    out.update({"input": args.input, "out": args.out, "quarantine": args.quarantine})
    print_json(out)
