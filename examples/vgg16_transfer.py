"""The VGG16 workflow of our notes (seeds 004 and 001), end to end, on any image folder.

A VGG16 convolutional base (``VGG16(include_top=False, input_shape=(150, 150, 3))``) with a new
Flatten -> Dense(256, relu) -> Dense(1, sigmoid) head, RMSprop at 2e-5: 30 epochs with the base
frozen (``for layer in vgg_base.layers: layer.trainable = False``), then 30 with block 5
unfrozen (``for layer in vgg_base.layers[15:]: layer.trainable = True``); the result saved as
``.keras``, ``.h5`` and a graftnet checkpoint, and each reloaded.

What graftnet does on its own: the images are resized to the base's input and preprocessed
the way the base expects (VGG16: Keras' ``preprocess_input`` in caffe mode, BGR minus the
ImageNet mean); with the base frozen its output is computed once and only the head trains;
with block 5 unfrozen the cache moves to the top of the still-frozen part (after
``block4_pool``). ``--augment`` adds random colour and geometry changes, which turn that cache
off (the log says why) unless ``--cache-views K`` computes K augmented views once.

    python examples/vgg16_transfer.py PHOTOS/ --weights vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5
    python examples/vgg16_transfer.py --sample-photos runs/photos       # make a folder from scikit-learn's photos
    python examples/vgg16_transfer.py runs/photos --size 32 --epochs 2 2 # no weights file: fixed-seed weights

PHOTOS/ holds one sub-folder per class (JPEG/PNG). The weights file is the one
``keras.applications.VGG16(include_top=False)`` downloads (or any Keras file with VGG16's
layer names); without one the base gets weights from a fixed seed (nothing pretrained: only the
mechanics are meaningful then). No ImageNet weights or cats-vs-dogs photos ship with graftnet.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

import graftnet as gn
from graftnet.io.keras import load_keras, save_keras


def sample_photos(folder: Path, patch: int = 96, per_class: int = 16) -> Path:
    """``folder/china`` and ``folder/flower``: patches of scikit-learn's two sample photographs."""
    from PIL import Image
    from sklearn.datasets import load_sample_images

    photos = load_sample_images()
    for path, image in zip(photos.filenames, photos.images):  # (427, 640, 3) uint8 each
        out = folder / Path(path).stem
        out.mkdir(parents=True, exist_ok=True)
        corners = [(r, c) for r in range(0, image.shape[0] - patch + 1, patch // 2)
                   for c in range(0, image.shape[1] - patch + 1, patch // 2)][:per_class]
        for i, (r, c) in enumerate(corners):
            Image.fromarray(image[r:r + patch, c:c + patch]).save(out / f"{i:03d}.{'jpg' if i % 2 else 'png'}")
    return folder


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", nargs="?", type=Path, help="images, one sub-folder per class")
    parser.add_argument("--weights", help="a Keras VGG16 weights file (default: weights from --seed)")
    parser.add_argument("--size", type=int, default=150, help="images are resized to SIZE x SIZE (default 150)")
    parser.add_argument("--epochs", type=int, nargs=2, default=[30, 30], metavar=("FROZEN", "BLOCK5"))
    parser.add_argument("--batch-size", type=int, default=20)
    parser.add_argument("--augment", action="store_true", help="random flips, zoom, rotation and colour changes")
    parser.add_argument("--cache-views", type=int, help="with --augment: K augmented views computed once")
    parser.add_argument("--out", type=Path, default=Path("models/vgg16-transfer"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sample-photos", type=Path, metavar="DIR", help="write a sample folder there and stop")
    args = parser.parse_args(argv)
    if args.sample_photos:
        print(f"wrote {sample_photos(args.sample_photos)}")
        return {}
    if args.folder is None:
        parser.error("give an image folder (or --sample-photos DIR to make one)")

    torch.manual_seed(args.seed)  # the base's weights when no file is given
    vgg_base = gn.backbones.vgg16(include_top=False, input_shape=(args.size, args.size, 3), weights=args.weights)
    # resized to the base's input, preprocessed as the base expects (VGG16: caffe), 20% valid, 20% test
    data = gn.datasets.image_folder(args.folder, size=(args.size, args.size), preprocess=vgg_base,
                                    valid_fraction=0.2, test_fraction=0.2, seed=args.seed)
    binary = data.n_classes == 2
    data = data.as_binary(data.classes[1]) if binary else data
    model = gn.Network([gn.Block(vgg_base),  # models.Sequential(); model.add(vgg_base); ...
                        gn.Flatten(name="flatten"),
                        gn.Dense(256, "relu", name="dense"),
                        gn.Dense(1 if binary else data.n_classes, "sigmoid" if binary else "softmax", name="dense_1")],
                       vgg_base.input_shape, name="vgg16_transfer")
    augment = gn.ImageAugment.for_data(data, flip=True, zoom=0.1, rotate=10, brightness=0.1, contrast=0.1,
                                       saturation=0.1, hue=0.02) if args.augment else None
    train = dict(batch_size=args.batch_size, optimizer=gn.RMSprop(lr=2e-5), augment=augment,
                 cache_views=args.cache_views, seed=args.seed)

    model.freeze("vgg16")                    # for layer in vgg_base.layers: layer.trainable = False
    history = gn.fit(model, data, epochs=args.epochs[0], **train)
    model.unfreeze("vgg16.layers[15:]")      # for layer in vgg_base.layers[15:]: layer.trainable = True
    history = gn.fit(model, data, epochs=args.epochs[1], history=history, **train)
    print(model.summary())
    result = {"test_accuracy": gn.evaluate(model, data)["accuracy"]}

    args.out.mkdir(parents=True, exist_ok=True)
    x = (data.test or data.valid or data.train).x
    expected = gn.predict(model, x)
    gn.save_model(model, args.out / "checkpoint")
    save_keras(model, args.out / "vgg16_transfer.keras")
    reloaded = {"checkpoint": gn.load_model(args.out / "checkpoint"),
                ".keras": load_keras(args.out / "vgg16_transfer.keras")[0]}
    save_keras(model, args.out / "vgg16_transfer.h5")  # the suffix picks Keras 2 / tf.keras HDF5: model.save("x.h5")
    reloaded[".h5"] = load_keras(args.out / "vgg16_transfer.h5")[0]
    for form, net in reloaded.items():
        result[f"max |prediction difference|, {form}"] = float((gn.predict(net, x) - expected).abs().max())
    for key, value in result.items():
        print(f"{key}: {value:.4g}")
    return result


if __name__ == "__main__":
    main()
