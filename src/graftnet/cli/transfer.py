"""``graftnet graft | finetune``: reuse a saved model's layers, fine-tune in stages."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from graftnet.cli._common import (
    add_data_args,
    add_train_args,
    check_model_fits,
    load_data_arg,
    load_model_arg,
    print_summary,
    train_kwargs,
)
from graftnet.cli.catalog import add_register_args, register_saved
from graftnet.errors import ConfigError

__all__ = ["COMMANDS", "register", "parse_add"]

COMMANDS = ("graft", "finetune")

GRAFT_EPILOG = """\
examples:
  graftnet graft models/fashion-a --reuse ':-1' --freeze reused --add 1 --data fashion:B --epochs 4
  graftnet graft models/base --reuse 'hidden[123]' --freeze 'hidden[12]' --add 20:relu --add 10 \\
           --data fashion --epochs 20 --batch-size 200 --out models/base-graft
  graftnet graft models/base --reuse ':3' --add 10 --out models/cut      # graft only, no training
  graftnet graft models/resnet --at conv4_block6_out --freeze reused --add gap --add 10 --data DIR
  graftnet graft keras:vgg16 --base-weights vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5 \
           --input-shape 150 150 3 --freeze reused --add flatten --add 256:relu:dense --add 2:softmax:dense_1

keras:FAMILY (vgg16, vgg19, resnet50, mobilenetv2, efficientnetb0, densenet121) builds that
Keras application without its top as one block named after it (vgg16/block5_conv1, ...);
an image folder given with --data (here or to finetune) is then resized to its input and
preprocessed as it expects (Keras' preprocess_input: caffe for VGG16).

--at LAYER attaches the new layers to any layer's output and keeps everything that layer
depends on (in a graph: its branches too).

--add UNITS[:ACTIVATION][:NAME] adds a Dense layer on top (in order); an unnamed last one is
called 'outputs', other unnamed ones continue hiddenN; --add flatten or --add gap first when the
reused layers end in an image. Without --add, one Dense layer with as
many outputs as the data needs is added. Selectors: a regex over layer names matched in full
('hidden[123]'), a slice of positions (':-1', '2:'), or 'all'. --freeze reused freezes every
reused layer. Frozen bottom layers are computed once and cached (see the 'cache:' line)."""

FINETUNE_EPILOG = """\
examples:
  graftnet finetune models/fashion-b-on-a --plan examples/recipes/book_ab_finetune.toml --out models/b-ft
  graftnet finetune models/x --plan plan.toml --data fashion:B --checkpoint runs/x-plan      # resumable
  graftnet finetune models/x --plan plan.toml --data fashion:B --checkpoint runs/x-plan --resume

A plan is a TOML file of [[stage]] tables (epochs, train, optimizer, lr, schedule, batch_size,
lr_mult, layer_decay, bn_affine, name) or a [gradual] table (reused, head, epochs_per_stage, k,
lr, lr_decay, stages), plus defaults for every stage (optimizer, lr, schedule, batch_size,
lr_mult, layer_decay) and optionally seed and data. Flags override the plan's defaults; a
stage's own settings override both."""


def register(subparsers: Any) -> None:
    """Add ``graft`` and ``finetune`` to ``graftnet``'s subparsers."""
    parser = subparsers.add_parser("graft", help="a new model from a saved model's lower layers plus new layers",
                                   description="Reuse the lower layers of a saved model, add new layers on top, "
                                               "freeze some, train on new data, and save it with its lineage.",
                                   epilog=GRAFT_EPILOG)
    parser.add_argument("base", help="the saved model (or run folder) to reuse layers from, or a Keras "
                                     "application, keras:FAMILY (keras:vgg16), nested as one block")
    parser.add_argument("--base-weights", metavar="FILE",
                        help="keras:FAMILY only: its weights file (default: 'imagenet' from Keras' cache folder)")
    parser.add_argument("--input-shape", type=int, nargs=3, metavar=("H", "W", "C"),
                        help="keras:FAMILY only: the input shape, channels last as in Keras (e.g. 150 150 3)")
    parser.add_argument("--reuse", default=":-1", metavar="SELECTOR",
                        help="layers to reuse, a bottom run of the base (default ':-1': all but the last)")
    parser.add_argument("--at", metavar="LAYER",
                        help="attach the new layers to this layer's output, keeping everything it depends on "
                             "(any layer of a graph, e.g. conv4_block6_out)")
    parser.add_argument("--freeze", metavar="SELECTOR", help="layers to freeze, or 'reused' for all reused layers")
    parser.add_argument("--add", action="append", default=[], metavar="UNITS[:ACTIVATION][:NAME]",
                        help="a new Dense layer on top; repeat for more (e.g. --add 20:relu --add 10)")
    parser.add_argument("--name", help="the new model's name (default: <base>-graft)")
    parser.add_argument("--out", metavar="DIR",
                        help="where to save the model (default: models/<base folder>-graft, e.g. "
                             "models/fashion-a-graft for models/fashion-a)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing model folder at --out")
    add_data_args(parser)
    add_train_args(parser)
    add_register_args(parser)
    parser.set_defaults(func=run_graft)

    parser = subparsers.add_parser("finetune", help="fine-tune a saved model with a staged plan (TOML)",
                                   description="Run a staged fine-tuning plan on a saved model: each stage "
                                               "freezes every layer but the ones it trains.",
                                   epilog=FINETUNE_EPILOG)
    parser.add_argument("model", help="the saved model (or run folder) to fine-tune")
    parser.add_argument("--plan", required=True, metavar="PLAN.toml", help="the fine-tuning plan")
    parser.add_argument("--out", metavar="DIR",
                        help="where to save the model (default: models/<model folder>-ft, e.g. "
                             "models/b-ft for models/b)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing model folder at --out")
    parser.add_argument("--checkpoint", metavar="DIR", help="save the plan's progress there after every epoch")
    parser.add_argument("--resume", action="store_true", help="continue the plan saved in --checkpoint")
    add_data_args(parser)
    add_train_args(parser)
    add_register_args(parser)
    parser.set_defaults(func=run_finetune)


# ---------------------------------------------------------------- helpers
def parse_add(text: str):  # -> graftnet.layers.LayerSpec
    """``"20:relu"`` -> ``Dense(20, "relu")``; ``"10"`` -> ``Dense(10)``; ``"10::outputs"`` names it;
    ``"flatten"`` and ``"gap"`` (global average pooling) flatten a convolutional output first.

    >>> parse_add("20:relu:hidden4")
    Dense(name='hidden4', units=20, activation='relu', init='he_normal', bias=True, l1=0.0, l2=0.0, max_norm=None)
    """
    from graftnet.layers import Dense, Flatten, GlobalAvgPool
    from graftnet.network import default_init

    word, _, layer_name = text.strip().partition(":")
    if word in ("flatten", "gap"):
        return (Flatten if word == "flatten" else GlobalAvgPool)(name=layer_name.strip() or None)
    parts = text.split(":")
    if len(parts) > 3 or not parts[0].strip().isdigit() or int(parts[0]) < 1:
        raise ConfigError(f"--add {text!r}: expected UNITS[:ACTIVATION][:NAME] with UNITS a whole number > 0, "
                          f"e.g. --add 20:relu or --add 10, or flatten / gap before Dense layers on images")
    activation = parts[1].strip() if len(parts) > 1 and parts[1].strip() else None
    name = parts[2].strip() if len(parts) > 2 and parts[2].strip() else None
    init = default_init(activation)
    try:
        return Dense(int(parts[0]), activation, init=init, name=name)
    except ConfigError as err:
        raise ConfigError(f"--add {text!r}: {err}") from None


def _test_scores(model: Any, data: Any) -> dict[str, float]:
    from graftnet.train import evaluate

    if data.test is None:
        return {}
    scores = evaluate(model, data)
    print("test: " + "  ".join(f"{k} {v:.4f}" for k, v in scores.items()), flush=True)
    return scores


def output_path(args: argparse.Namespace, source: str, suffix: str) -> Path:
    """Where a command that makes a model from ``source`` saves it: ``--out``, else
    ``models/<source folder>-<suffix>`` (a run folder's own name, not its ``model/``).
    An existing folder there is an error unless ``--overwrite`` is given, so a user's model
    is never replaced without a word; checked before any training."""
    if args.out:
        out = Path(args.out)
    else:
        folder = Path(source).resolve()
        if folder.name == "model" and (folder.parent / "recipe.toml").is_file():  # a run's model/
            folder = folder.parent
        out = Path("models") / f"{folder.name}-{suffix}"
    if out.exists() and not args.overwrite:
        raise ConfigError(f"{out} already exists; pass --overwrite to replace it, or --out DIR to save elsewhere")
    return out


def _save(model: Any, out: str | Path, data: Any, extra: dict[str, Any]) -> Path:
    from graftnet.io.checkpoint import save_model

    metadata = dict(extra)
    if data is not None:
        metadata.update(data=data.source, data_name=data.name, classes=data.classes)
    path = save_model(model, out, metadata=metadata)
    print(f"saved {model.name!r} to {path}", flush=True)
    return path


# ---------------------------------------------------------------- graft
def _keras_application(args: argparse.Namespace):  # -> graftnet.network.Network
    """``keras:vgg16`` without its top, as one block of a network: as Keras'
    ``Sequential([vgg_base, ...])`` nests it, so its layers are ``vgg16/block1_conv1``, ..."""
    from graftnet import zoo
    from graftnet.network import Block, Network

    if args.input_shape is None:
        raise ConfigError(f"{args.base}: give --input-shape H W C (channels last, as Keras), e.g. 150 150 3")
    application = zoo.load(args.base, include_top=False, input_shape=tuple(args.input_shape),
                           weights=args.base_weights or "imagenet")
    wrapper = Network([Block(application)], application.input_shape, name=application.name)
    wrapper.info["backbone"] = dict(application.info["backbone"])  # its preprocess_input convention above all
    return wrapper


def run_graft(args: argparse.Namespace) -> int:
    from graftnet.train import fit
    from graftnet.transfer import graft

    out = output_path(args, args.base.replace(":", "-"), "graft")
    base = _keras_application(args) if args.base.startswith("keras:") else load_model_arg(args.base)
    head = [parse_add(text) for text in args.add]
    kwargs = train_kwargs(args)
    data = load_data_arg(args, model=base) if args.data else None
    if data is None and kwargs.get("epochs"):
        raise ConfigError("--epochs needs --data: the data to train the grafted model on")
    if not head:
        if data is None:
            raise ConfigError("nothing to add: give --add UNITS[:ACTIVATION] (e.g. --add 10) or --data, whose "
                              "number of outputs then sizes a new output layer")
        from graftnet.layers import Dense

        head = [Dense(data.n_outputs)]
    freeze: Any = True if args.freeze == "reused" else args.freeze
    reuse = "all" if args.base.startswith("keras:") and args.reuse == ":-1" else args.reuse  # the whole base
    model = graft(base, reuse=reuse, head=head, freeze=freeze, name=args.name, at=args.at)
    if args.base.startswith("keras:"):  # saved with the model: finetune reads image folders the same way
        from graftnet.backbones import preprocess_mode

        model.info["preprocess_input"] = preprocess_mode(base)
    print_summary(model)
    metadata: dict[str, Any] = {"graft": {"base": str(args.base), "reuse": args.reuse, "freeze": args.freeze,
                                          "add": list(args.add), "at": args.at}}
    if data is not None:
        check_model_fits(model, data)
        epochs = kwargs.pop("epochs", 10)
        if epochs:
            history = fit(model, data, epochs=epochs, **kwargs)
            metadata["history"] = history.to_dict()
        metadata["metrics"] = {"test": _test_scores(model, data)}
    register_saved(args, _save(model, out, data, metadata), data=data)
    return 0


# ---------------------------------------------------------------- finetune
def run_finetune(args: argparse.Namespace) -> int:
    from graftnet.transfer import FineTune

    plan = FineTune.from_toml(args.plan)
    if args.resume and not args.checkpoint:
        raise ConfigError("--resume needs --checkpoint DIR: the folder the plan saved its progress in")
    kwargs = train_kwargs(args)
    if "epochs" in kwargs:
        raise ConfigError(f"--epochs: a plan sets the epochs of each stage; edit {args.plan} instead")
    out = output_path(args, args.model, "ft")
    model = load_model_arg(args.model)
    if not args.data and plan.data:
        args.data = plan.data
    if not args.data:
        raise ConfigError(f"no data: pass --data NAME|PATH or set data = \"...\" in {args.plan}")
    data = load_data_arg(args, model=model)
    check_model_fits(model, data)
    print_summary(model)
    seed = kwargs.pop("seed", None)
    history = plan.fit(model, data, checkpoint=args.checkpoint, resume=args.resume, seed=seed, **kwargs)
    scores = _test_scores(model, data)
    metadata = {"finetuned_from": model.info.get("path"), "plan": plan.to_dict(), "history": history.to_dict(),
                "metrics": {"test": scores}}
    register_saved(args, _save(model, out, data, metadata), data=data)
    return 0
