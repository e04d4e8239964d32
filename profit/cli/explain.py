"""`profit explain [NET] -p PATCH -d IDX`: formal explanations over a pixel patch (hitting-set duality)."""

from __future__ import annotations

import argparse
import json

import torch

from profit.cli.common import (
    EXIT_USER_ERROR, IMAGES_HELP, RUN_ARGS, arg, command, print_run, run_batch, run_options, write_text,
)
from profit.data import ImageSet, fit_to_network, load_images, load_network, network_channels
from profit.errors import ProfitError
from profit.explain import (
    ENUMS, HTYPES, MODES, CascadeOracle, ExplainOptions, Explainer, OracleOptions, PixelDomain, format_item,
    format_step, parse_target, read_patch, summary_lines,
)


def handle(args: argparse.Namespace) -> int:
    """One line per explanation / counterexample (and candidate with -v), then the summary.
    Exit 0 when the enumeration is complete, 2 when it is partial."""
    if args.levels is not None and args.domain is not None:
        raise ProfitError("give either -i K or --domain, not both")
    domain = PixelDomain.parse(f"levels:{args.levels}" if args.levels is not None else args.domain or "binary")
    net = load_network(args.network)
    images = load_images(args.dataset, channels=network_channels(net))
    instances = parse_instances(args.instance)
    for instance in instances:
        if not 0 <= instance < len(images):
            raise ProfitError(f"instance {instance} is out of range: {images.source} holds {len(images)} images "
                              f"(0..{len(images) - 1})")
    batch = run_options(args, batch=len(instances) > 1)
    if batch is not None:
        return _batch(args, net, images, instances, domain, batch)
    args.instance = instances[0]
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
        from profit.viz import save_explanation_pngs  # matplotlib: only when pictures are asked for

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


def parse_instances(text: str) -> list[int]:
    """-d: one index (7), a range (0-9, both ends included) or a comma-separated list of both (0,3,5-7)."""
    out: list[int] = []
    try:
        for part in text.split(","):
            lo, sep, hi = part.strip().partition("-")
            first = int(lo)
            last = int(hi) if sep else first
            if last < first:
                raise ValueError
            out += range(first, last + 1)
    except ValueError:
        raise ProfitError(f"-d must be an image index, a range 0-9 or a list 0,3,5-7, got '{text}'") from None
    if len(set(out)) != len(out):
        raise ProfitError(f"-d lists an instance twice: '{text}'")
    return out


def _batch(args: argparse.Namespace, net: object, images: ImageSet, instances: list[int], domain: PixelDomain,
           batch: object) -> int:
    """Many instances into the store: one line per instance, exit 0 if every enumeration is complete."""
    if args.save or args.verbose:
        raise ProfitError("--save and -v explain one instance: give a single -d without batch flags")
    from profit.runs import ExplainJob, image_tasks

    fit_to_network(images.images[:1], net, images.source)
    job = ExplainJob(net.source, tuple(read_patch(args.patch)), str(domain), args.mode, args.enum, args.limit,
                     args.timeout, ExplainOptions(target=parse_target(args.target), margin=args.margin,
                                                  htype=args.htype),
                     OracleOptions(timeout=args.timeout_oracle), images.source)
    job.check(net, images.images[instances[0]])
    labels = None if images.labels is None else images.labels[instances]
    chosen = ImageSet(images.images[instances], labels, tuple(instances), images.source)
    finished = run_batch(job, image_tasks(chosen), batch)
    rows = job.results(finished.rows)
    print(f"network {net.source}, {len(rows)} instances of {images.source}, target {args.target}, mode {args.mode}, "
          f"domain {domain}, {len(job.patch)} patch pixels")
    print(f"{'inst':>6} {'label':>5} {'pred':>4} {'target':>8}  {'status':<9} {'axps':>5} {'cxps':>5} {'seconds':>8}")
    for r in rows:
        label = "-" if r["label"] is None else r["label"]
        pred = "-" if r["predicted"] is None else r["predicted"]
        print(f"{r['instance']:>6} {label:>5} {pred:>4} {r['target'] or '-':>8}  {r['enumeration']:<9} "
              f"{r['explanations'] if r['explanations'] is not None else '-':>5} "
              f"{r['counterexamples'] if r['counterexamples'] is not None else '-':>5} {r['seconds'] or 0.0:>8.2f}")
    complete = sum(r["enumeration"] == "complete" for r in rows)
    print(f"complete {complete}/{len(rows)}; explanations {sum(r['explanations'] or 0 for r in rows)}, "
          f"counterexamples {sum(r['counterexamples'] or 0 for r in rows)}; "
          f"{sum(r['seconds'] or 0.0 for r in rows):.2f} s")
    print_run(finished)
    if args.json_out:
        write_text(args.json_out, json.dumps([r["document"] for r in rows if r["document"]], indent=1))
    return 0 if complete == len(rows) else EXIT_USER_ERROR


COMMAND = command(
    "explain", "formal explanations over a pixel patch: AXps/CXps, or the paper's explanations and "
    "counterexamples (hitting-set duality)",
    arg("network", nargs="?", default="mnist_5v6", metavar="NET",
        help="ONNX file or shipped network name (default: %(default)s, the binary 5-vs-6 net)"),
    arg("-p", "--patch", required=True, metavar="PATCH",
        help="file of comma-separated row-major pixel indices, or the list itself (431,432,458)"),
    arg("-d", "--instance", required=True, metavar="IDX",
        help="index of the image in the dataset; a range 0-9 or a list 0,3,5-7 explains each (a batch run)"),
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
    arg("--no-progress", action="store_true", help="no progress bar on stderr (batch runs)"),
    *RUN_ARGS,
    handler=handle)
