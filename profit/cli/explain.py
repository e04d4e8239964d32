"""`profit explain [NET] -p PATCH -d IDX`: formal explanations over a pixel patch (hitting-set duality)."""

from __future__ import annotations

import argparse
import json

import torch

from profit.cli.common import EXIT_USER_ERROR, IMAGES_HELP, arg, command, write_text
from profit.data import fit_to_network, load_images, load_network, network_channels
from profit.errors import ProfitError
from profit.explain import (
    ENUMS, HTYPES, MODES, CascadeOracle, ExplainOptions, Explainer, OracleOptions, PixelDomain, format_item,
    format_step, parse_target, read_patch, summary_lines,
)
from profit.viz import save_explanation_pngs


def handle(args: argparse.Namespace) -> int:
    """One line per explanation / counterexample (and candidate with -v), then the summary.
    Exit 0 when the enumeration is complete, 2 when it is partial."""
    if args.levels is not None and args.domain is not None:
        raise ProfitError("give either -i K or --domain, not both")
    domain = PixelDomain.parse(f"levels:{args.levels}" if args.levels is not None else args.domain or "binary")
    net = load_network(args.network)
    images = load_images(args.dataset, channels=network_channels(net))
    if not 0 <= args.instance < len(images):
        raise ProfitError(f"instance {args.instance} is out of range: {images.source} holds {len(images)} images "
                          f"(0..{len(images) - 1})")
    x = fit_to_network(images.images[args.instance:args.instance + 1], net, images.source)[0]
    if domain.discrete:
        x = torch.from_numpy(domain.quantize(x.double().numpy()))
    options = ExplainOptions(target=parse_target(args.target), margin=args.margin, htype=args.htype)
    oracle_options = OracleOptions(timeout=args.timeout_oracle)
    explainer = Explainer(net, x, read_patch(args.patch), domain, oracle=lambda p: CascadeOracle(p, oracle_options),
                          mode=args.mode, options=options)
    label = "-" if images.labels is None else int(images.labels[args.instance])
    print(f"network {net.source}, instance {args.instance} of {images.source} (label {label}, predicted class "
          f"{explainer.predicted}), target {explainer.target_name}, mode {args.mode}, domain {domain}, "
          f"{explainer.problem.n} patch pixels")
    trace = (lambda step: print(format_step(step))) if args.verbose else None
    run = explainer.enumerate(args.enum, limit=args.limit, timeout=args.timeout, trace=trace)
    counts = {"axp": 0, "cxp": 0}
    for item in run:
        counts[item.kind] += 1
        print(format_item(item, counts[item.kind]))
    for line in summary_lines(run):
        print(line)
    if args.save:
        saved = save_explanation_pngs(explainer, args.outdir, run, one=args.expl, sample=args.instance)
        print(f"wrote {len(saved.paths)} PNGs to {args.outdir}: {', '.join(saved.paths)}")
        ae = saved.adversarial
        if ae is not None:
            runtime = "-" if ae.runtime_predicted is None else ae.runtime_predicted
            verdict = "verified" if ae.violates else "NOT adversarial"
            print(f"true adversarial example: predicted class {ae.predicted} (float64), {runtime} (onnxruntime): "
                  f"{verdict}")
    if args.json_out:
        document = {"network": net.source, "instance": args.instance, **run.to_json()}
        write_text(args.json_out, json.dumps(document, indent=1))
    return 0 if run.status == "complete" else EXIT_USER_ERROR


COMMAND = command(
    "explain", "formal explanations over a pixel patch: AXps/CXps, or the paper's explanations and "
    "counterexamples (hitting-set duality)",
    arg("network", nargs="?", default="mnist_5v6", metavar="NET",
        help="ONNX file or shipped network name (default: %(default)s, the binary 5-vs-6 net)"),
    arg("-p", "--patch", required=True, metavar="PATCH",
        help="file of comma-separated row-major pixel indices, or the list itself (431,432,458)"),
    arg("-d", "--instance", type=int, required=True, metavar="IDX", help="index of the image in the dataset"),
    arg("--dataset", metavar="FILE", default=None,
        help=IMAGES_HELP),
    arg("-c", "--class", dest="target", default="true", metavar="true|opposite|K",
        help="explain the predicted class (true, default), any other class (opposite), or class K"),
    arg("-e", "--expl", type=int, default=0, metavar="N",
        help="the explanation drawn in sample{d}-{c}-one-expl.png (0-based, default 0)"),
    arg("-i", "--levels", type=int, metavar="K", help="K intensity levels (same as --domain levels:K)"),
    arg("--domain", default=None, metavar="D",
        help="pixel domain: binary (default), levels:K, box, linf:EPS; discrete domains quantise the image"),
    arg("--mode", default="local", choices=MODES,
        help="local: AXps/CXps (default); absolute: (pixel, value) literals as in the paper"),
    arg("--enum", default="axp", choices=ENUMS,
        help="enumerate explanations (axp, default), counterexamples (cxp) or both"),
    arg("--htype", default="rc2", choices=HTYPES, help="hitting-set enumerator"),
    arg("--limit", type=int, metavar="N", help="at most N items of each enumerated kind"),
    arg("--margin", type=float, default=0.0,
        help="another class must beat the explained one by more than this (ties: lowest index)"),
    arg("--timeout-oracle", type=float, metavar="S", help="seconds of complete search per oracle query"),
    arg("--timeout", type=float, metavar="S", help="seconds for the whole enumeration"),
    arg("--save", action="store_true", help="write PNGs (see --outdir)"),
    arg("--outdir", default=".", metavar="DIR", help="where --save writes (default: the current directory)"),
    arg("--json", dest="json_out", metavar="FILE", help="write the results as JSON here"),
    arg("-v", "--verbose", action="store_true", help="also print every candidate the hitting-set solver proposes"),
    handler=handle)
