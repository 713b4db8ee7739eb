"""Fine-tune an ImageNet MobileNetV2 on a folder of your own photos.

``DIR/cats/*.jpg``, ``DIR/dogs/*.jpg`` ...: one sub-folder per class, read with
``keras.utils.image_dataset_from_directory``; 20% of the images are held out
for validation. The same two steps as the offline experiment: a new head on
the frozen base, then the top layers of the base unfrozen at a 10x smaller
learning rate.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import keras
import pandas as pd
from PIL import Image, UnidentifiedImageError

from cnn import applications
from utils import plots, runs
from utils.callbacks import EpochTimer
from utils.errors import ImageReadError, TutorialError

CHAPTER = "cnn"
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif"}  # what image_dataset_from_directory reads
IMAGENET_SIZES = (96, 128, 160, 192, 224)  # the input sizes MobileNetV2's ImageNet weights exist for
FINE_TUNE_FACTOR = 10
JIT = False  # XLA-compiling MobileNetV2 takes longer on a CPU than a small folder's training


def check_folder(folder: Path) -> dict[str, int]:
    """Images per class sub-folder; every image is opened once, so a damaged file is named
    here instead of failing half-way through training."""
    if not folder.is_dir():
        raise TutorialError(f"--images {folder}: no such folder; give a folder with one sub-folder "
                            "of images per class")
    counts, bad = {}, []
    for sub in sorted(d for d in folder.iterdir() if d.is_dir()):
        files = [f for f in sub.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES]
        for f in files:
            try:
                with Image.open(f) as image:
                    image.verify()
            except (UnidentifiedImageError, OSError, SyntaxError):
                bad.append(str(f))
        counts[sub.name] = len(files)
    if bad:
        raise ImageReadError(f"{len(bad)} file(s) in {folder} are not readable images, e.g. {bad[0]}; "
                             "remove or replace them")
    filled = {name: n for name, n in counts.items() if n}
    if len(filled) < 2:
        raise TutorialError(f"{folder} needs at least two sub-folders (one per class) holding images "
                            f"({', '.join(sorted(IMAGE_SUFFIXES))}); found {counts or 'none'}")
    if sum(filled.values()) < 5:
        raise TutorialError(f"{folder} holds only {sum(filled.values())} images: with 20% held out for "
                            "validation that leaves nothing to learn from; add more")
    return filled


def load_folder(folder: Path, size: int, batch_size: int, seed: int):
    import tensorflow as tf

    counts = check_folder(folder)
    train, val = keras.utils.image_dataset_from_directory(
        folder, validation_split=0.2, subset="both", seed=seed, image_size=(size, size),
        batch_size=batch_size, verbose=False)  # images: (batch, size, size, 3) floats 0-255
    return train.prefetch(tf.data.AUTOTUNE), val.prefetch(tf.data.AUTOTUNE), train.class_names, counts


def build_model(classes: int, size: int, weights: str | None):
    """Photos -> flip augmentation -> [-1, 1] scaling -> MobileNetV2 base -> average -> softmax."""
    arch = applications.ARCHITECTURES["mobilenet_v2"]
    base = applications.build(arch, weights, include_top=False, input_shape=(size, size, 3))
    base.trainable = False
    inputs = keras.Input((size, size, 3))
    x = keras.layers.RandomFlip("horizontal")(inputs)
    x = keras.layers.Rescaling(1 / 127.5, offset=-1)(x)  # what mobilenet_v2.preprocess_input does
    # training=False keeps the base's batch normalisation on its ImageNet statistics, also
    # once the base is unfrozen: a few photos would otherwise overwrite them.
    x = base(x, training=False)  # (batch, size/32, size/32, 1280)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dropout(0.2)(x)
    outputs = keras.layers.Dense(classes, activation="softmax")(x)
    return keras.Model(inputs, outputs, name="mobilenet_v2_transfer"), base


def _compile(model, learning_rate, jit_compile="auto"):
    model.compile(optimizer=keras.optimizers.Adam(learning_rate),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"], jit_compile=jit_compile)


def train_and_evaluate(args, argv=None) -> runs.RunResult:
    size = args.image_size
    if args.weights == "imagenet" and size not in IMAGENET_SIZES:
        raise TutorialError(f"--image-size {size}: MobileNetV2's ImageNet weights exist for "
                            f"{', '.join(map(str, IMAGENET_SIZES))}")
    arch = applications.ARCHITECTURES["mobilenet_v2"]
    resolved = applications.resolve_weights(arch, args.weights, include_top=False, size=size)
    train, val, class_names, counts = load_folder(args.images, size, args.batch_size, args.seed)
    keras.utils.set_random_seed(args.seed)
    model, base = build_model(len(class_names), size, resolved)
    run = runs.Run(CHAPTER, "transfer_mobilenet_v2", args, argv)
    verbose = 0 if args.quiet else 2
    if not args.quiet:
        print(f"{sum(counts.values())} images in {len(class_names)} classes "
              f"({', '.join(f'{k}: {v}' for k, v in counts.items())}); 80% train, 20% validation\n"
              f"step 1: new head on the frozen base ({base.count_params():,} parameters), "
              f"{args.epochs} epoch(s)", flush=True)

    start = time.perf_counter()
    _compile(model, args.learning_rate, JIT)
    first = model.fit(train, validation_data=val, epochs=args.epochs, callbacks=[EpochTimer()],
                      verbose=verbose, shuffle=False)  # the dataset shuffles itself
    head_val = float(first.history["val_accuracy"][-1])

    # Step 2: unfreeze the top of the base; its lower layers (edges, textures) stay as they are.
    base.trainable = True
    for layer in base.layers[:-args.fine_tune_layers]:
        layer.trainable = False
    fine_epochs = args.fine_tune_epochs or args.epochs
    if not args.quiet:
        print(f"step 2: fine-tuning the top {args.fine_tune_layers} layers of the base at lr "
              f"{args.learning_rate / FINE_TUNE_FACTOR:g}, {fine_epochs} epoch(s)", flush=True)
    _compile(model, args.learning_rate / FINE_TUNE_FACTOR, JIT)  # recompile: trainable flags changed
    second = model.fit(train, validation_data=val, epochs=args.epochs + fine_epochs,
                       initial_epoch=args.epochs, callbacks=[EpochTimer()], verbose=verbose,
                       shuffle=False)
    fit_seconds = time.perf_counter() - start

    history = pd.concat([pd.DataFrame(first.history).assign(phase="head"),
                         pd.DataFrame(second.history).assign(phase="fine-tune")], ignore_index=True)
    history.insert(0, "epoch", range(1, len(history) + 1))
    plots.save_standard_plots(history, "mobilenet_v2 transfer (head, then fine-tune)", run.dir)
    val_loss, val_accuracy = model.evaluate(val, verbose=0)
    metrics = {"head_val_accuracy": head_val, "val_accuracy": float(val_accuracy),
               "val_loss": float(val_loss), "fit_seconds": fit_seconds,
               "trainable_params_fine_tune": sum(math.prod(w.shape) for w in model.trainable_weights)}
    return run.finish(model=model, history=history, metrics=metrics, dataset=str(args.images),
                      class_names=class_names, images_per_class=counts, weights=args.weights)
