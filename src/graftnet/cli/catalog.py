"""``graftnet catalog add | list | show | search | lineage | remove | relocate``, and ``--register``.

    graftnet catalog add models/fashion-a --tag fashion --tag mlp
    graftnet catalog search --input-shape 1,28,28 --classes Sandal
    graftnet catalog lineage fashion-b-ft -o lineage.png
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any

from graftnet.cli._common import print_json, print_table
from graftnet.errors import ConfigError

__all__ = ["COMMANDS", "register", "add_register_args", "register_saved"]

COMMANDS = ("catalog",)

CATALOG_EPILOG = """\
examples:
  graftnet catalog add models/fashion-a --tag fashion          # name and version from the model
  graftnet catalog add runs/fashion_mlp-20250101-120000 --name fashion-mlp
  graftnet catalog list                                        # every entry, with its status
  graftnet catalog show fashion-a                              # the latest version; fashion-a:v1 for one
  graftnet catalog search --input-shape 1,28,28 --classes Sandal,Shirt --task binary
  graftnet catalog search selu --tag fashion                   # TEXT in name, description, data, layers, tags
  graftnet catalog lineage fashion-b-ft -o lineage.png         # the tree, printed and drawn
  graftnet catalog relocate fashion-a /new/place/fashion-a     # after moving a model folder
  graftnet catalog remove fashion-a:v1                         # the entry only; the folder stays

The catalog is one SQLite file in your data folder (~/.local/share/graftnet/catalog.sqlite)
unless --catalog or $GRAFTNET_CATALOG names another: a file path or a SQLAlchemy URL such as
postgresql://host/models for a team. train, graft, finetune and study register what they
save when given --register."""


def _catalog_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--catalog", metavar="URL|FILE",
                        help="the catalog: a file path or SQLAlchemy URL (default: $GRAFTNET_CATALOG, else "
                             "~/.local/share/graftnet/catalog.sqlite)")


def register(subparsers: Any) -> None:
    """Add ``catalog`` and its subcommands to ``graftnet``'s subparsers."""
    parser = subparsers.add_parser("catalog", help="the model catalog: add, list, show, search, lineage, remove",
                                   description="A database of trained models: what each was trained on, its "
                                               "metrics, and which model it reused layers from.",
                                   epilog=CATALOG_EPILOG)
    commands = parser.add_subparsers(dest="catalog_command", metavar="ACTION", title="actions")
    parser.set_defaults(func=lambda args: (parser.print_help(), 2)[1])

    add = commands.add_parser("add", help="register a saved model (a model or run folder)")
    add.add_argument("path")
    add.add_argument("--name", help="catalog name (default: the model's own name)")
    add.add_argument("--tag", action="append", default=[], help="a tag; repeat for more")
    add.add_argument("--description")
    add.add_argument("--parent", metavar="REF|FOLDER", help="the model it was fine-tuned from (recorded as lineage)")
    add.set_defaults(func=run_add)

    listing = commands.add_parser("list", help="every entry with its status (ok, missing, changed)")
    listing.add_argument("name", nargs="?", help="only this name's versions")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(func=run_list)

    show = commands.add_parser("show", help="one entry in full (NAME for the latest version, NAME:vN)")
    show.add_argument("ref", metavar="NAME[:vN]")
    show.add_argument("--json", action="store_true")
    show.set_defaults(func=run_show)

    search = commands.add_parser("search", help="entries by input shape, classes, task, tag or text")
    search.add_argument("text", nargs="?", help="a substring of name, description, data, layers or a tag")
    search.add_argument("--input-shape", metavar="C,H,W", help="e.g. 1,28,28 or 784")
    search.add_argument("--classes", metavar="A,B", help="models that know every one of these classes")
    search.add_argument("--task", choices=("binary", "multiclass", "regression"))
    search.add_argument("--tag")
    search.add_argument("--json", action="store_true")
    search.set_defaults(func=run_search)

    lineage = commands.add_parser("lineage", help="the lineage tree (base -> grafted -> fine-tuned), printed and drawn")
    lineage.add_argument("ref", metavar="NAME[:vN]")
    lineage.add_argument("-o", "--output", metavar="FILE.png", help="the picture (default: lineage-NAME.png)")
    lineage.set_defaults(func=run_lineage)

    remove = commands.add_parser("remove", help="remove an entry (the model folder is not touched)")
    remove.add_argument("ref", metavar="NAME[:vN]")
    remove.add_argument("--all", action="store_true", help="every version of NAME")
    remove.set_defaults(func=run_remove)

    relocate = commands.add_parser("relocate", help="point an entry at its moved folder (weights are checked)")
    relocate.add_argument("ref", metavar="NAME[:vN]")
    relocate.add_argument("path")
    relocate.set_defaults(func=run_relocate)

    for sub in (add, listing, show, search, lineage, remove, relocate):
        _catalog_arg(sub)


def _open(args: argparse.Namespace):  # -> graftnet.catalog.Catalog
    from graftnet.catalog import Catalog

    return Catalog(getattr(args, "catalog", None))


def _short_row(entry: Any, status: str | None = None) -> dict[str, Any]:
    test = entry.metrics.get("test") if isinstance(entry.metrics.get("test"), dict) else {}
    row = {"model": entry.ref, "task": entry.task or "-", "input": "x".join(map(str, entry.input_shape)),
           "classes": len(entry.classes) if entry.classes else "-", "data": entry.data_name or "-",
           "test acc": f"{test['accuracy']:.4f}" if isinstance(test.get("accuracy"), (int, float)) else "-",
           "tags": ",".join(entry.tags) or "-"}
    if status is not None:
        row["status"] = status
    return row


def run_add(args: argparse.Namespace) -> int:
    catalog = _open(args)
    entry = catalog.add(args.path, name=args.name, tags=args.tag, description=args.description, parent=args.parent)
    links = "; ".join(f"{k.relation} from {k.parent_name or k.parent_path}" for k in entry.links)
    print(f"registered {entry.ref} ({entry.path}, weights {entry.fingerprint[:12]})" + (f"; {links}" if links else "")
          + f" in {catalog.url}")
    return 0


def run_list(args: argparse.Namespace) -> int:
    entries = _open(args).list(args.name)
    if args.json:
        print_json([{**e.to_dict(), "status": e.status()} for e in entries])
        return 0
    if not entries:
        print("the catalog is empty" if args.name is None else f"no model named {args.name!r}")
        return 0
    print_table([_short_row(e, e.status()) for e in entries])
    return 0


def run_show(args: argparse.Namespace) -> int:
    catalog = _open(args)
    entry = catalog.get(args.ref)
    problem = entry.problem()
    if args.json:
        print_json({**entry.to_dict(), "status": entry.status(), "problem": problem})
        return 0
    print(f"{entry.ref}  ({'ok' if problem is None else 'NOT USABLE: ' + problem})")
    lines = [("path", entry.path), ("weights", entry.fingerprint),
             ("input", f"{tuple(entry.input_shape)} -> {tuple(entry.output_shape)}"), ("task", entry.task or "-"),
             ("classes", ", ".join(entry.classes) if entry.classes else "-"),
             ("data", f"{entry.data_name or '-'} (fingerprint {entry.data_fingerprint or '-'})"),
             ("params", f"{entry.architecture.get('params', 0):,}"),
             ("layers", entry.architecture.get("text", "-")), ("tags", ", ".join(entry.tags) or "-"),
             ("created", entry.created or "-"), ("registered", entry.registered)]
    if entry.description:
        lines.insert(0, ("about", entry.description))
    for split, scores in entry.metrics.items():
        if isinstance(scores, dict):
            text = "  ".join(f"{k} {v:.4f}" for k, v in scores.items() if isinstance(v, (int, float)))
            lines.append((f"metrics {split}", text))
    for link, parent in catalog.parents(entry):
        lines.append(("lineage", f"{link.relation} from {parent.ref if parent else (link.parent_name or '?')}"
                      + ("" if parent else " (not in the catalog)")))
    if entry.recipe:
        lines.append(("recipe", "yes (show --json prints it)"))
    width = max(len(k) for k, _ in lines)
    for key, value in lines:
        print(f"  {key.ljust(width)}  {value}")
    return 0


def _shape(text: str | None) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        return tuple(int(v) for v in re.split(r"[,x ]+", text.strip("()[] ")) if v)
    except ValueError:
        raise ConfigError(f"--input-shape {text!r}: expected whole numbers such as 1,28,28 or 784") from None


def run_search(args: argparse.Namespace) -> int:
    classes = [c.strip() for c in args.classes.split(",") if c.strip()] if args.classes else None
    found = _open(args).search(input_shape=_shape(args.input_shape), classes=classes, task=args.task, tag=args.tag,
                               text=args.text)
    if args.json:
        print_json([e.to_dict() for e in found])
        return 0
    if not found:
        print("no model matches")
        return 0
    print_table([_short_row(e) for e in found])
    return 0


def run_lineage(args: argparse.Namespace) -> int:
    catalog = _open(args)
    entry = catalog.get(args.ref)
    print(catalog.lineage_text(entry.ref))
    output = Path(args.output) if args.output else Path(f"lineage-{entry.name}.png")
    catalog.plot_lineage(entry.ref, output)
    print(f"picture: {output}")
    return 0


def run_remove(args: argparse.Namespace) -> int:
    removed = _open(args).remove(args.ref, all_versions=args.all)
    print(f"removed {', '.join(e.ref for e in removed)} from the catalog (model folders untouched)")
    return 0


def run_relocate(args: argparse.Namespace) -> int:
    entry = _open(args).relocate(args.ref, args.path)
    print(f"{entry.ref} now points at {entry.path} (weights checked: {entry.fingerprint[:12]})")
    return 0


# ---------------------------------------------------------------- --register for train/graft/finetune/study
def add_register_args(parser: argparse.ArgumentParser) -> None:
    """``--register`` (add what the command saves to the catalog) and ``--catalog URL|FILE``."""
    group = parser.add_argument_group("catalog")
    group.add_argument("--register", action="store_true",
                       help="add the saved model to the catalog (see graftnet catalog --help)")
    group.add_argument("--catalog", metavar="URL|FILE", help="the catalog --register writes to (default: "
                                                             "$GRAFTNET_CATALOG, else the user's data folder)")


def register_saved(args: argparse.Namespace, path: str | Path, *, data: Any = None,
                   metrics: dict[str, Any] | None = None) -> None:
    """Register the model saved at ``path`` when ``--register`` was given; prints its ref."""
    if not getattr(args, "register", False):
        return
    from graftnet.catalog import Catalog

    catalog = Catalog(getattr(args, "catalog", None))
    entry = catalog.add(path, data=data, metrics=metrics)
    print(f"registered {entry.ref} in the catalog {catalog.url}", flush=True)
