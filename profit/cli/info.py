"""`profit info NET`: the IR nodes, shapes and parameter counts of a network."""

from __future__ import annotations

import argparse

from profit.cli.common import arg, command, format_shape
from profit.data import load_network

NETWORK_ARG = arg("network", metavar="NET", help="ONNX file or name of a shipped network")


def handle(args: argparse.Namespace) -> int:
    """A table of the IR nodes (index, name, op, per-sample output shape, parameters), then totals."""
    net = load_network(args.network)
    rows = [("#", "name", "op", "output shape", "params")]
    for i, node in enumerate(net.nodes):
        same = node.onnx_op.lower() in ("", node.layer.op.lower())
        op = node.layer.op if same else f"{node.layer.op} ({node.onnx_op})"
        rows.append((str(i), node.name, op, format_shape(node.shape), f"{node.layer.n_params():,}"))
    widths = [max(len(row[c]) for row in rows) for c in range(len(rows[0]))]
    for row in rows:
        cells = [cell.rjust(w) if c in (0, 4) else cell.ljust(w) for c, (cell, w) in enumerate(zip(row, widths))]
        print("  ".join(cells).rstrip())
    print()
    print(f"nodes:        {len(net)}")
    print(f"parameters:   {net.n_params():,}")
    print(f"input shape:  {format_shape(net.input_shape)} per sample "
          f"(ONNX: {format_shape(net.onnx_input_shape)}{'' if net.has_batch_dim else ', no batch dim'})")
    print(f"output shape: {format_shape(net.output_shape)} per sample")
    print(f"source:       {net.source}")
    return 0


COMMAND = command(
    "info", "print the IR nodes of a network", NETWORK_ARG,
    handler=handle)
