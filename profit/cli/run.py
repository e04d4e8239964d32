"""`profit run NET INPUT|--sample K`: run a network on one input and print its prediction."""

from __future__ import annotations

import argparse
import json

from profit.cli.common import arg, command
from profit.cli.info import NETWORK_ARG
from profit.data import load_input, load_network, load_sample
from profit.errors import ProfitError

JSON_ARG = arg("--json", action="store_true", help="print one JSON object instead of text")


def handle(args: argparse.Namespace) -> int:
    """Print `predicted: k` and the logits (4 decimals), or one JSON object with --json."""
    if (args.input is None) == (args.sample is None):
        raise ProfitError("run: give either an INPUT file or --sample K (not both)")
    net = load_network(args.network)
    label = None
    if args.sample is not None:
        x, label = load_sample(args.sample, net)
    else:
        x = load_input(args.input, net)
    output = net.logits(x)[0]
    predicted, logits = int(output.argmax()), output.tolist()
    if args.json:
        print(json.dumps({"predicted": predicted, "logits": logits}))
        return 0
    if label is not None:
        print(f"sample {args.sample}: label {label}")
    print(f"predicted: {predicted}")
    print("logits: [" + ", ".join(f"{v:.4f}" for v in logits) + "]")
    return 0


COMMAND = command(
    "run", "run a network on one input and print its prediction",
    NETWORK_ARG,
    arg("input", nargs="?", metavar="INPUT", help="a PNG/JPEG image or a .npy array"),
    arg("--sample", type=int, metavar="K", help="use the K-th shipped MNIST sample instead of INPUT"),
    JSON_ARG,
    handler=handle)
