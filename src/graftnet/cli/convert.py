"""``graftnet import | export``: bring models in from Keras, TensorFlow, PyTorch, NumPy; take them out.

Both commands print the mapping report (every key that was loaded, and anything missing,
unexpected or mismatched) and write nothing when something fails: the model folder or
file appears complete or not at all.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import zipfile
from pathlib import Path
from typing import Any

from graftnet.cli._common import add_data_args, add_train_args
from graftnet.errors import ConfigError, ImportFormatError

__all__ = ["COMMANDS", "register", "detect_format"]

COMMANDS = ("import", "export")

IMPORT_FORMATS = ("keras", "savedmodel", "tf", "torch", "npz")
EXPORT_FORMATS = ("onnx", "keras", "npz", "safetensors")

IMPORT_EPILOG = """\
examples:
  graftnet import mnist_cnn.keras -o models/mnist-cnn                  # Keras 3 archive
  graftnet import model.h5 -o models/book-mlp                           # tf.keras / Keras 2 / Keras 3 HDF5
  graftnet import exported_model/ -o models/cnn         # SavedModel dir (tf_keras save, Keras 3 export)
  graftnet import my_model_final.ckpt -o models/book              # TF1 checkpoint + its .meta graph
  graftnet import my_model_final.ckpt --input-shape 1 28 28 --data mnist --epochs 20 -o models/book-more
                                                                   # ... and keep training as the graph did
  graftnet import my_model_final.ckpt --spec book_mlp.json -o models/book   # values into a twin (TF1/TF2)
  graftnet import weights.pt --like models/fashion-a \\
           --rename 'fc(\\d)\\.(.*)=hidden\\1.\\2' -o models/from-torch          # PyTorch state dict
  graftnet import weights.npz --like models/fashion-a --layout keras -o models/from-npz

Keras files carry their architecture, and so does a SavedModel directory (tf_keras' model.save
keeps the Keras config in keras_metadata.pb; Keras 3's model.export and tf.saved_model.save are
rebuilt from the serving function's ops, naming any op graftnet cannot map), and so does a TF1
checkpoint with the .meta file tf.train.Saver writes beside it: the network is rebuilt from the graph (layer names from its
scopes, the training settings recorded; `graftnet inspect my_model_final.ckpt.meta` lists every
op and what it became). --data with --epochs then continues training with the graph's optimizer,
learning rate, gradient clipping and max-norm (flags override them). Other TensorFlow
checkpoints, state dicts and .npz files hold weights only, so they need the target
architecture: --spec (a graftnet spec.json) or --like (an existing graftnet model whose spec is
used, with fresh weights); a .meta beside a checkpoint is then checked against that twin
(activations, BatchNorm epsilon/momentum, Flatten order). A .safetensors written by
`graftnet export --format safetensors` carries its spec and needs neither.
Keras and TensorFlow images are channels-last: the imported network takes (C, H, W) inputs."""

EXPORT_EPILOG = """\
examples:
  graftnet export models/fashion-a --format onnx -o fashion-a.onnx        # checked in ONNX Runtime
  graftnet export models/fashion-a -o fashion-a.keras                      # keras.models.load_model reads it
  graftnet export models/fashion-a -o fashion-a.h5       # Keras 2 / tf.keras HDF5: Keras 3 and tf_keras read it
  graftnet export models/fashion-a --format npz --layout keras -o w.npz
  graftnet export models/fashion-a --format safetensors -o w.safetensors

The format is taken from --format, else from the output's suffix. Every export is read
back and compared with the model before it replaces FILE; the report shows what was read."""


def register(subparsers: Any) -> None:
    """Add ``import`` and ``export`` to ``graftnet``'s subparsers."""
    parser = subparsers.add_parser("import", help="import a Keras, TensorFlow, PyTorch or NumPy model",
                                   description="Import a model trained elsewhere as a graftnet model folder.",
                                   epilog=IMPORT_EPILOG)
    parser.add_argument("file", help="the file (.h5, .keras, SavedModel directory, .ckpt prefix or its .meta, "
                                     ".pt, .safetensors, .npz)")
    parser.add_argument("--format", choices=IMPORT_FORMATS,
                        help="the file's format (default: from its suffix and bytes)")
    parser.add_argument("-o", "--output", required=True, metavar="DIR", help="the graftnet model folder to write")
    parser.add_argument("--spec", metavar="SPEC.json", help="target architecture: a graftnet network spec")
    parser.add_argument("--like", metavar="MODEL", help="target architecture: that of this graftnet model")
    parser.add_argument("--input-shape", type=int, nargs="+", metavar="N",
                        help="Keras, when the file records none: the Keras input shape, e.g. 28 28 1; a TF meta "
                             "graph with a flat input: the (C, H, W) images the network should take, e.g. 1 28 28")
    parser.add_argument("--rename", action="append", default=[], metavar="REGEX=REPLACEMENT",
                        help="map source keys to model keys (repeatable; applied in order; the last '=' splits)")
    parser.add_argument("--layout", choices=("torch", "keras"), default="torch",
                        help="npz only: the names and shapes the arrays use (default torch)")
    parser.add_argument("--partial", action="store_true",
                        help="load what matches and keep the rest freshly initialised (default: all or nothing)")
    parser.add_argument("--tf-input", metavar="TENSOR",
                        help="TF meta graph: the input tensor (default: the one float placeholder the output reads)")
    parser.add_argument("--tf-output", metavar="TENSOR",
                        help="TF meta graph: the output tensor, e.g. dnn/Y_proba:0 (default: the logits of the loss)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing model folder")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    add_data_args(parser)
    add_train_args(parser)
    parser.set_defaults(func=run_import)

    parser = subparsers.add_parser("export", help="export a graftnet model to ONNX, Keras, NumPy or safetensors",
                                   description="Export a graftnet model to another format.", epilog=EXPORT_EPILOG)
    parser.add_argument("model", help="a graftnet model folder (or a run folder)")
    parser.add_argument("--format", choices=EXPORT_FORMATS, help="default: from the output's suffix")
    parser.add_argument("-o", "--output", required=True, metavar="FILE", help="the file to write")
    parser.add_argument("--layout", choices=("torch", "keras"), default="torch", help="npz only (default torch)")
    parser.add_argument("--batch-size", type=int, metavar="N", help="onnx only: a fixed batch size (default dynamic)")
    parser.add_argument("--opset", type=int, metavar="N", help="onnx only: the opset version")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing file")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.set_defaults(func=run_export)


# ======================================================================= import
def detect_format(path: str | os.PathLike[str]) -> str:
    """``keras``, ``tf``, ``torch`` or ``npz``, from the suffix and the first bytes.

        >>> detect_format("model.h5")
        'keras'
    """
    path = Path(path)
    from graftnet.io.saved_model import is_saved_model

    if is_saved_model(path):
        return "savedmodel"
    if _is_tf_checkpoint(path) or path.suffix == ".meta":
        return "tf"
    if not path.exists():
        raise ImportFormatError(f"no file at {path}: it does not exist (for a TensorFlow checkpoint, "
                                f"give its prefix, e.g. my_model.ckpt, or its folder)")
    suffix = path.suffix.lower()
    if suffix in (".h5", ".hdf5", ".keras"):
        return "keras"
    if suffix in (".safetensors", ".pt", ".pth", ".bin", ".ckpt"):
        return "torch"
    if suffix == ".npz":
        return "npz"
    if path.is_file():
        with open(path, "rb") as f:
            head = f.read(9)
        if head.startswith(b"\x89HDF"):
            return "keras"
        if head.startswith(b"PK"):
            return _zip_kind(path)
        if head[:1] == b"\x80" or head[8:9] == b"{":  # a pickle, or safetensors' header length + JSON
            return "torch"
    raise ImportFormatError(f"cannot tell the format of {path}; pass --format "
                            f"({', '.join(IMPORT_FORMATS)})")


def _is_tf_checkpoint(path: Path) -> bool:
    if path.is_dir():
        return (path / "checkpoint").is_file() or any(path.glob("*.index"))
    return path.suffix == ".index" or Path(f"{path}.index").is_file() or ".data-" in path.name


def _meta_file(file: str | os.PathLike[str]) -> Path | None:
    """The ``.meta`` graph named by ``file`` or beside the checkpoint prefix it names, if any."""
    path = Path(file)
    if path.suffix == ".meta":
        return path
    from graftnet.io.tf_checkpoint import _resolve_prefix  # the prefix rules of read_tf_checkpoint

    try:
        prefix = _resolve_prefix(path)
    except (ImportFormatError, FileNotFoundError):
        return None
    meta = Path(f"{prefix}.meta")
    return meta if meta.is_file() else None


def _zip_kind(path: Path) -> str:
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except zipfile.BadZipFile:
        raise ImportFormatError(f"{path} starts like a zip archive but is not a readable one") from None
    if "config.json" in names:
        return "keras"
    if any(n.endswith(".npy") for n in names):
        return "npz"
    return "torch"


def _parse_rename(rules: list[str]) -> list[tuple[str, str]]:
    out = []
    for rule in rules:
        pattern, sep, replacement = rule.rpartition("=")
        if not sep or not pattern:
            raise ConfigError(f"--rename {rule!r}: expected REGEX=REPLACEMENT, e.g. 'fc(\\d)\\.(.*)=hidden\\1.\\2'")
        out.append((pattern, replacement))
    return out


def _target_network(args: argparse.Namespace, fmt: str):  # -> Network
    from graftnet.cli._common import model_folder
    from graftnet.io.checkpoint import resolve_model_dir
    from graftnet.network import Network

    if args.spec and args.like:
        raise ConfigError("give --spec or --like, not both")
    source = None
    if args.spec:
        source = Path(args.spec)
    elif args.like:
        source = resolve_model_dir(model_folder(args.like)) / "spec.json"
    if source is not None:
        try:
            spec = json.loads(source.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"no spec at {source}") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ConfigError(f"{source} is not valid JSON ({err})") from None
        return Network.from_spec(spec, source=str(source))
    if fmt == "torch":
        from graftnet.io.torch_state import spec_from_safetensors

        spec = spec_from_safetensors(args.file)
        if spec is not None:
            return Network.from_spec(spec, source=f"{args.file} (graftnet_spec)")
    raise ConfigError(f"{args.file} holds weights only ({fmt}); give the target architecture with "
                      f"--spec spec.json or --like models/OTHER")


def _import(args: argparse.Namespace, fmt: str):  # -> (Network, MappingReport)
    rename = _parse_rename(args.rename)
    if fmt == "keras":
        if rename or args.spec or args.like:
            raise ConfigError("a Keras file carries its own architecture and layer names; "
                              "--rename, --spec and --like apply to tf, torch and npz imports")
        from graftnet.io.keras import load_keras

        return load_keras(args.file, input_shape=tuple(args.input_shape) if args.input_shape else None)
    if fmt == "savedmodel":
        if rename or args.spec or args.like or args.partial:
            raise ConfigError("a SavedModel carries its own architecture, layer names and every variable; "
                              "--rename, --spec, --like and --partial apply to tf, torch and npz imports")
        from graftnet.io.saved_model import load_saved_model

        return load_saved_model(args.file, input_shape=tuple(args.input_shape) if args.input_shape else None)
    if fmt == "tf" and not (args.spec or args.like) and _meta_file(args.file) is not None:
        if rename or args.partial:
            raise ConfigError("a TF meta graph gives the layer names and every variable; --rename and --partial "
                              "apply to imports into a --spec/--like twin")
        from graftnet.io.tf_graph import import_meta_graph

        imported = import_meta_graph(args.file, image_shape=tuple(args.input_shape) if args.input_shape else None,
                                     inputs=[args.tf_input] if args.tf_input else None,
                                     outputs=[args.tf_output] if args.tf_output else None)
        return imported.network, imported.report()
    if args.tf_input or args.tf_output:
        raise ConfigError("--tf-input and --tf-output choose tensors of a TF meta graph: give a .meta file or a "
                          "checkpoint with its .meta beside it, without --spec/--like")
    if args.input_shape:
        raise ConfigError("--input-shape applies to Keras files and TF meta graphs; the architecture of a "
                          f"{fmt} import comes from --spec or --like")
    if fmt == "tf" and str(args.file).endswith(".meta"):
        raise ConfigError(f"{args.file} is a meta graph: import it without --spec/--like (the graph gives the "
                          f"architecture), or give the checkpoint prefix to load its values into the twin")
    net = _target_network(args, fmt)
    strict = not args.partial
    if fmt == "tf":
        from graftnet.io.tf_checkpoint import load_tf_checkpoint

        return net, load_tf_checkpoint(net, args.file, rename=rename or None, strict=strict)
    if fmt == "torch":
        from graftnet.io.torch_state import load_state

        return net, load_state(net, args.file, rename=rename or None, strict=strict)
    from graftnet.io.npz import load_npz

    return net, load_npz(net, args.file, strict, layout=args.layout, rename=rename or None)


def run_import(args: argparse.Namespace) -> int:
    from graftnet.io.checkpoint import save_model

    output = Path(args.output)
    if output.exists() and not args.overwrite:
        raise ConfigError(f"{output} already exists; pass --overwrite to replace it")
    fmt = args.format or detect_format(args.file)
    data = _continue_data(args)
    net, report = _import(args, fmt)
    net.info.update(imported_from=str(args.file), import_format=fmt)
    metadata: dict[str, Any] = {"import_report": report.to_dict()}
    if data is not None:
        metadata.update(_continue_training(net, data, args))
    save_model(net, output, metadata=metadata)
    _print_report(report, args.json)
    if not args.json:
        print(f"saved {output}: {len(net.layer_names)} layers, {net.count_params():,} parameters, "
              f"input shape {tuple(net.input_shape)}")
    return 0


def _continue_data(args: argparse.Namespace):  # -> Dataset | None
    from graftnet.cli._common import load_data_arg, train_kwargs

    if not args.data:
        if train_kwargs(args):
            raise ConfigError("training flags (--epochs, --lr, ...) need --data: the data to continue training on")
        return None
    return load_data_arg(args)


def _continue_training(net: Any, data: Any, args: argparse.Namespace) -> dict[str, Any]:
    """Train the imported network on ``data`` with the graph's own settings; flags override them."""
    from graftnet.cli._common import check_model_fits, train_kwargs
    from graftnet.io.tf_graph import training_setup
    from graftnet.train import evaluate, fit

    if "tensorflow" not in net.info:
        raise ConfigError("--data continues training with the settings a TF meta graph records; for other imports, "
                          "train the saved model with graftnet graft or graftnet finetune")
    if tuple(data.input_shape) != tuple(net.input_shape):
        hint = (f"; pass --input-shape {' '.join(map(str, data.input_shape))} so the network takes these images"
                if len(net.input_shape) == 1 and math.prod(data.input_shape) == net.input_shape[0] else "")
        raise ConfigError(f"data {data.name!r} has examples of shape {tuple(data.input_shape)} but the imported "
                          f"graph takes {tuple(net.input_shape)}{hint}")
    check_model_fits(net, data)
    kwargs = training_setup(net)
    given = train_kwargs(args)
    if "optimizer" in given or "lr" in given:  # flags override the graph's optimizer and its learning rate
        optimizer = dict(kwargs["optimizer"])
        chosen = given.pop("optimizer", None)
        if chosen is not None:
            optimizer = {"type": chosen} if isinstance(chosen, str) else dict(chosen)
        if "lr" in given:
            optimizer["lr"] = given.pop("lr")
        kwargs["optimizer"] = optimizer
    kwargs.update(given)
    epochs = kwargs.pop("epochs", 10)
    print(f"continuing training for {epochs} epoch(s) with the graph's settings: "
          + ", ".join(f"{k}={v}" for k, v in kwargs.items())
          + (f"; frozen as the graph's var_list leaves them out: {', '.join(net.frozen)}" if net.frozen else ""))
    history = fit(net, data, epochs=epochs, **kwargs)
    scores = {split: evaluate(net, getattr(data, split), task=data.task)
              for split in ("valid", "test") if getattr(data, split) is not None}
    return {"history": history.to_dict(), "metrics": scores, "continued_training": {"epochs": epochs, **kwargs}}


def _print_report(report: Any, as_json: bool) -> None:
    if as_json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(report)


# ======================================================================= export
_SUFFIXES = {".onnx": "onnx", ".keras": "keras", ".h5": "keras", ".hdf5": "keras", ".npz": "npz",
             ".safetensors": "safetensors"}  # .h5 / .hdf5: save_keras writes Keras 2 / tf.keras HDF5


def run_export(args: argparse.Namespace) -> int:
    from graftnet.cli._common import load_model_arg
    from graftnet.io.checkpoint import atomic_output

    output = Path(args.output)
    fmt = args.format or _SUFFIXES.get(output.suffix.lower())
    if fmt is None:
        raise ConfigError(f"cannot tell the export format from {output.name!r}; pass --format "
                          f"({', '.join(EXPORT_FORMATS)}) or use a suffix {', '.join(_SUFFIXES)}")
    if output.exists() and not args.overwrite:
        raise ConfigError(f"{output} already exists; pass --overwrite to replace it")
    if fmt != "onnx" and (args.batch_size is not None or args.opset is not None):
        raise ConfigError("--batch-size and --opset apply to --format onnx")
    model = load_model_arg(args.model)
    with atomic_output(output) as partial:  # replaces output only once the written file is verified
        _write(model, partial, fmt, args)
        summary = _verify(model, partial, fmt, args)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(summary["text"])
        print(f"wrote {output} ({fmt})")
    return 0


def _write(model: Any, path: Path, fmt: str, args: argparse.Namespace) -> None:
    if fmt == "onnx":
        from graftnet.io.onnx import DEFAULT_OPSET, export_onnx

        export_onnx(model, path, batch_size=args.batch_size, opset=args.opset or DEFAULT_OPSET)
    elif fmt == "keras":
        from graftnet.io.keras import save_keras

        save_keras(model, path)
    elif fmt == "npz":
        from graftnet.io.npz import save_npz

        save_npz(model, path, layout=args.layout)
    else:
        from graftnet.io.torch_state import save_state

        save_state(model, path)


def _verify(model: Any, path: Path, fmt: str, args: argparse.Namespace) -> dict[str, Any]:
    """Read the written file back and compare it with ``model``; the report of that read."""
    import torch

    from graftnet.network import Network

    x = torch.randn(4, *model.input_shape, generator=torch.Generator().manual_seed(0))
    if fmt == "onnx":
        from graftnet.io.onnx import check_onnx

        diff = check_onnx(model, path, x)
        _check_diff(diff, path)
        return {"format": fmt, "max_abs_diff": diff,
                "text": f"{Path(args.output).name}: ONNX Runtime vs graftnet on a random batch "
                        f"of 4: max abs difference {diff:.3g}"}
    if fmt == "keras":
        from graftnet.io.keras import load_keras

        copy, report = load_keras(path)
    else:
        copy = Network.from_spec(model.to_spec())
        if fmt == "npz":
            from graftnet.io.npz import load_npz

            report = load_npz(copy, path, layout=args.layout)
        else:
            from graftnet.io.torch_state import load_state

            report = load_state(copy, path)
    model.eval()
    copy.eval()
    with torch.no_grad():
        diff = float((model(x) - copy(x)).abs().max())
    _check_diff(diff, path)
    report.source = str(args.output)
    return {"format": fmt, "report": report.to_dict(), "max_abs_diff": diff,
            "text": f"{report}\nread back: max abs difference {diff:.3g} on a random batch of 4"}


def _check_diff(diff: float, path: Path) -> None:
    if not diff <= 1e-4:
        raise ImportFormatError(f"the exported file does not reproduce the model (max abs difference "
                                f"{diff:.3g}); nothing was written")
