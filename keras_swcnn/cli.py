"""The ``swcnn`` command: demo, train, compare, evaluate, benchmark, convert-tensorpack, export, info.

    swcnn demo            # train + prune a small ResNet-18 on Fashion-MNIST, report (≈10 min, 2 cores)
    swcnn demo --quick    # the same on a few hundred images (seconds)
    swcnn train --run-dir run [--resume]   # the full recipe, checkpointed every epoch
    swcnn compare --run-dir cmp            # spatial vs Winograd-native vs Winograd-ReLU pruning
    swcnn info            # versions, backend, native kernels
    swcnn benchmark       # sparse vs dense vs Conv2D inference time (table + PNG)
    swcnn export m.tflite # the shipped model for LiteRT (or .onnx, or a SavedModel directory)
"""

import argparse
import json
import sys


def _print_json(data):
    print(json.dumps(data, indent=1, default=str))


def cmd_info(args):
    import keras_swcnn
    from keras_swcnn.applications import weights

    info = keras_swcnn.build_info()
    info["python"] = sys.version.split()[0]
    info["registered_weights"] = sorted(weights.REGISTRY)
    if args.json:
        _print_json(info)
    else:
        for key, value in info.items():
            print(f"{key:>26}: {value}")
    return 0


def _report(result, plot):
    from keras_swcnn import analysis

    print(analysis.format_report(result.report))
    if plot:
        analysis.plot_densities(result.report, plot)
        print(f"density plot written to {plot}")
    print(f"dense test accuracy:  {result.dense_accuracy:.4f}")
    print(f"final test accuracy:  {result.accuracy:.4f}")
    print(f"Winograd layers: {result.report.winograd_reduction:.1f}x fewer multiplications than "
          f"dense spatial convolution; whole model {result.report.reduction:.1f}x")
    print(f"time: {result.seconds:.0f} s")


def _densities(text):
    return tuple(float(d) for d in text.split(",")) if text else ()


def _recipe(args, base):
    """``base`` with the recipe options given on the command line."""
    import dataclasses

    fields = {"epochs": args.epochs, "batch_size": args.batch_size, "optimizer": args.optimizer,
              "learning_rate": args.learning_rate, "warmup_epochs": args.warmup_epochs,
              "augment": args.augment, "prune_epochs": getattr(args, "prune_epochs", None),
              "seed": args.seed}
    if getattr(args, "prune_densities", None) is not None:
        fields["prune_densities"] = _densities(args.prune_densities)
    return dataclasses.replace(base, **{k: v for k, v in fields.items() if v is not None})


def cmd_train(args):
    from keras_swcnn.applications import curves, training

    quick = getattr(args, "quick", False)
    recipe = _recipe(args, training.DEMO if args.command == "demo" else training.FULL)
    if quick:
        import dataclasses

        recipe = dataclasses.replace(recipe, epochs=1, prune_epochs=1)
    result = training.train_fashion_mnist(
        width=args.width, recipe=recipe,
        train_samples=512 if quick else args.train_samples,
        test_samples=256 if quick else args.test_samples,
        run_dir=getattr(args, "run_dir", None), resume=getattr(args, "resume", False),
        validate=getattr(args, "validate", False),
        verbose=1 if sys.stdout.isatty() else 2)
    _report(result, args.plot)
    if getattr(args, "curves", None) and result.logs:
        curves.plot_training_curves(result.logs, args.curves)
        print(f"training curves written to {args.curves}")
    if getattr(args, "output", None):
        result.model.save_weights(args.output)
        print(f"weights written to {args.output}")
    return 0


def cmd_compare(args):
    import dataclasses

    from keras_swcnn.applications import comparison

    recipe = _recipe(args, comparison.RECIPE)
    stages = comparison.compare_variants(
        width=args.width, recipe=recipe, densities=_densities(args.densities),
        stage_epochs=args.stage_epochs, variants=tuple(v.strip() for v in args.variants.split(",")),
        train_samples=args.train_samples, test_samples=args.test_samples, run_dir=args.run_dir,
        resume=args.resume, verbose=1 if sys.stdout.isatty() else 2)
    table = comparison.format_markdown(stages)
    print(table)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(table + "\n")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"recipe": recipe.as_dict(), "width": args.width, "stage_epochs": args.stage_epochs,
                       "stages": [dict(dataclasses.asdict(s), reduction=s.reduction) for s in stages]},
                      f, indent=1)
    if args.plot:
        comparison.plot(stages, args.plot)
        print(f"plot written to {args.plot}")
    return 0


def cmd_evaluate(args):
    import numpy as np

    from keras_swcnn.applications import ResNet18
    from keras_swcnn.applications.training import load_fashion_mnist

    model = ResNet18(weights=args.weights, variant="small", input_shape=(28, 28, 1), classes=10,
                     width=args.width, classifier_activation=None)
    _, (x_test, y_test) = load_fashion_mnist(test_samples=args.test_samples)
    logits = model.predict(x_test, batch_size=500, verbose=0)
    accuracy = float(np.mean(np.argmax(logits, -1) == y_test))
    print(f"test accuracy: {accuracy:.4f} on {len(y_test)} Fashion-MNIST test images")
    return 0


def cmd_convert(args):
    from keras_swcnn.applications.convert import convert_tensorpack_checkpoint

    path = convert_tensorpack_checkpoint(args.checkpoint, args.output, classes=args.classes,
                                         masks=args.masks)
    masked = f", masks from {args.masks}" if args.masks else ""
    print(f"converted {args.checkpoint}{masked} -> {path}")
    print("inputs: preprocess_input(rgb_images, mode='tensorpack') (BGR order, as the original)")
    return 0


def cmd_export(args):
    from keras_swcnn import export, sparse
    from keras_swcnn.applications import ResNet18

    model = ResNet18(weights=args.weights)
    if args.sparse:
        model = sparse.sparsify(model)
    path = export.export_model(model, args.output, format=args.format, native=args.native)
    raw, packed = export.artifact_size(path)
    kind = "sparse" if args.sparse else "dense"
    lowering = "native custom calls: runs only where keras_swcnn is imported" if args.native else (
        "portable: standard ops only")
    print(f"exported ResNet18(weights={args.weights!r}), {kind} Winograd layers, {lowering} -> {path}")
    print(f"size: {raw / 1e6:.2f} MB, {packed / 1e6:.2f} MB gzipped")
    return 0


def _shape_list(text):
    shapes = []
    for item in text.split(","):
        parts = item.lower().replace("->", "x").split("x")
        if len(parts) != 4 or not all(p.strip().isdigit() for p in parts):
            raise argparse.ArgumentTypeError(f"expected HxWxCxK shapes, got {item!r}")
        shapes.append(tuple(int(p) for p in parts))
    return shapes


def cmd_benchmark(args):
    from keras_swcnn import benchmark

    rows = []
    for batch in args.batch:
        rows += benchmark.layer_table(args.shapes, args.densities, batch, args.repeats)
    print(f"Layer inference, backend {keras_backend()}: median of {args.repeats} interleaved runs")
    print(benchmark.format_layer_table(rows))
    models = []
    if not args.skip_model:
        for batch in args.batch:
            m = benchmark.model_table(batch, args.repeats, weights=args.weights)
            models.append(m)
            print(f"ResNet18(weights={m['weights']!r}) batch {batch}: Winograd density "
                  f"{m['winograd_density']:.3f}; spatial {m['spatial_s'] * 1e3:.2f} ms, dense "
                  f"Winograd {m['dense_s'] * 1e3:.2f} ms, sparse {m['sparse_s'] * 1e3:.2f} ms: "
                  f"{m['speedup_vs_spatial']:.2f}x faster than spatial, "
                  f"{m['speedup_vs_dense']:.2f}x faster than dense")
    if args.plot:
        print(f"plot: {benchmark.plot_speedup(rows, args.plot)}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"backend": keras_backend(), "layers": rows, "models": models}, f, indent=1)
    return 0


def keras_backend():
    import keras

    return keras.backend.backend()


def _recipe_arguments(parser, run_dir=None):
    """Options that change the recipe; each defaults to the command's own recipe."""
    parser.add_argument("--width", type=int, default=16, help="first-stage width (paper: 64)")
    parser.add_argument("--epochs", type=int, help="dense training epochs")
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--optimizer", choices=("sgd", "adam"))
    parser.add_argument("--learning-rate", type=float, help="peak learning rate (cosine-decayed)")
    parser.add_argument("--warmup-epochs", type=float)
    parser.add_argument("--augment", action=argparse.BooleanOptionalAction, default=None,
                        help="random crop, flip and erasing")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--train-samples", type=int, default=None)
    parser.add_argument("--test-samples", type=int, default=None)
    default = f" (default {run_dir})" if run_dir else ""
    parser.add_argument("--run-dir", default=run_dir,
                        help=f"folder for per-epoch checkpoints and logs{default}")
    parser.add_argument("--resume", action="store_true", help="continue the run in --run-dir")


def _training_arguments(parser, run_dir=None):
    _recipe_arguments(parser, run_dir)
    parser.add_argument("--prune-epochs", type=float, help="epochs of the pruning phase")
    parser.add_argument("--prune-densities",
                        help="comma-separated Winograd weight densities; empty: no pruning "
                             "(default 0.5,0.3,0.2,0.1)")
    parser.add_argument("--plot", default="swcnn_densities.png", help="PNG of the densities ('' for none)")


def build_parser():
    parser = argparse.ArgumentParser(
        prog="swcnn", description="Sparse-Winograd CNNs for Keras 3 (keras-swcnn).")
    commands = parser.add_subparsers(dest="command", required=True)

    info = commands.add_parser("info", help="versions, Keras backend and native kernels")
    info.add_argument("--json", action="store_true")
    info.set_defaults(func=cmd_info)

    demo = commands.add_parser(
        "demo", help="train and prune a small Winograd-ReLU ResNet-18 on Fashion-MNIST; report")
    _training_arguments(demo)
    demo.add_argument("--quick", action="store_true", help="a few hundred images only (a smoke test)")
    demo.set_defaults(func=cmd_train)

    train = commands.add_parser(
        "train", help="train (and prune) ResNet-18 on Fashion-MNIST with the full recipe; resumable")
    _training_arguments(train, run_dir="swcnn_train_run")
    train.add_argument("--validate", action=argparse.BooleanOptionalAction, default=True,
                       help="test accuracy after every epoch (for the curves)")
    train.add_argument("--curves", default="swcnn_training.png", help="PNG of the training curves")
    train.add_argument("--output", help="write the final weights here (.weights.h5)")
    train.set_defaults(func=cmd_train)

    compare = commands.add_parser(
        "compare", help="the paper's comparison: spatial, Winograd-native and Winograd-ReLU pruning")
    _recipe_arguments(compare, run_dir="swcnn_compare_run")
    compare.add_argument("--densities", default="0.5,0.3,0.2,0.1,0.05")
    compare.add_argument("--stage-epochs", type=float, default=1.0,
                         help="epochs of pruning + fine-tuning per density")
    compare.add_argument("--variants", default="spatial,winograd_native,winograd_relu")
    compare.add_argument("--markdown", help="also write the table to this file")
    compare.add_argument("--json", help="also write the results to this file")
    compare.add_argument("--plot", default="swcnn_comparison.png",
                         help="PNG of accuracy vs multiplications ('' for none)")
    compare.set_defaults(func=cmd_compare)

    evaluate = commands.add_parser("evaluate", help="test accuracy of ResNet-18 weights on Fashion-MNIST")
    evaluate.add_argument("--weights", default="fashion_mnist_small",
                          help="a registered weights name or a .weights.h5 path")
    evaluate.add_argument("--width", type=int, default=16)
    evaluate.add_argument("--test-samples", type=int, default=None)
    evaluate.set_defaults(func=cmd_evaluate)

    bench = commands.add_parser(
        "benchmark", help="inference time of sparse Winograd layers and ResNet18 vs Conv2D")
    bench.add_argument("--batch", type=int, nargs="+", default=[32, 1])
    bench.add_argument("--densities", type=_densities, default="1.0,0.5,0.3,0.2,0.1,0.05")
    bench.add_argument("--shapes", type=_shape_list,
                       default="56x56x64x64,28x28x128x128,14x14x256x256,14x14x512x512",
                       help="comma-separated HxWxCxK layer shapes")
    bench.add_argument("--repeats", type=int, default=5)
    bench.add_argument("--weights", default="fashion_mnist_small",
                       help="registered weights of the whole-model row")
    bench.add_argument("--skip-model", action="store_true", help="layers only")
    bench.add_argument("--plot", default="swcnn_sparse_speedup.png",
                       help="PNG of speedup vs density ('' for none)")
    bench.add_argument("--json", help="also write the results to this file")
    bench.set_defaults(func=cmd_benchmark)

    convert = commands.add_parser(
        "convert-tensorpack", help="convert the paper's TF1/tensorpack checkpoint to ResNet18 weights")
    convert.add_argument("checkpoint", help="checkpoint prefix (or .index / .data file)")
    convert.add_argument("output", help="output .weights.h5 for ResNet18(variant='imagenet')")
    convert.add_argument("--classes", type=int, default=1000)
    convert.add_argument("--masks", help="pruning-mask pickle of the paper's prune_script.py (W * mask)")
    convert.set_defaults(func=cmd_convert)

    exporter = commands.add_parser(
        "export", help="export the ResNet-18 of registered weights (LiteRT, SavedModel, ONNX)")
    exporter.add_argument("output", help=".tflite (LiteRT), .onnx, or a directory (SavedModel)")
    exporter.add_argument("--format", choices=("litert", "tf_saved_model", "onnx"),
                          help="override the format the output's extension implies")
    exporter.add_argument("--weights", default="fashion_mnist_small", help="registered weights")
    exporter.add_argument("--sparse", action="store_true",
                          help="SparseWinogradReLUConv2D layers (compressed kernels) instead of dense")
    exporter.add_argument("--native", action="store_true",
                          help="export the native custom calls (not portable; see keras_swcnn.export)")
    exporter.set_defaults(func=cmd_export)
    return parser


#: Commands that train: their process keeps freed memory for reuse (keras_swcnn.allocator).
TRAINING_COMMANDS = ("demo", "train", "compare")


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if argv is None and args.command in TRAINING_COMMANDS:  # a process of its own, not a caller's
        from keras_swcnn import allocator

        allocator.keep_freed_memory()
    if getattr(args, "resume", False) and not args.run_dir:
        parser.error("--resume needs --run-dir (the folder of the run to continue)")
    for option in ("plot", "curves"):
        if getattr(args, option, None) == "":
            setattr(args, option, None)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, RuntimeError, OSError) as error:
        print(f"swcnn {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
