"""CROWN and alpha-CROWN: our domains side by side with auto_LiRPA.

Same networks, images, eps-balls, specification (robustness rows C), batch and
torch thread count for both; prints one markdown table, one row per net x method.

auto_LiRPA is not a dependency of the project: run this script with the Python of
a throwaway venv that has it (setup in benchmarks/README.md); without it the
script says so and exits 0. Our package is imported from this repository.

    /tmp/lirpa-venv/bin/python benchmarks/lirpa_compare.py --count 100 --threads 1
    /tmp/lirpa-venv/bin/python benchmarks/lirpa_compare.py --quick

Networks reach auto_LiRPA as an equivalent torch nn.Sequential converted from our
IR here (Linear, Conv2d, ReLU, Flatten/reshape; the CIFAR normalisation as a fixed
1x1 convolution); the conversion is checked against our forward pass (1e-5) first.

Methods (ours always with default options):
- crown: our Crown vs auto_LiRPA's CROWN with `compare_crown_with_ibp` on, which
  is our algorithm: adaptive ReLU lower slope (1 if u > -l else 0), CROWN
  intermediate bounds intersected with interval bounds computed from the previous
  layers' bounds. The bounds must agree up to float rounding.
- crown-lirpa-default: the same ours vs auto_LiRPA's CROWN with its default options
  (no interval intersection: looser on deep MLPs, where ours is then tighter).
- alpha-crown-fixed: our AlphaCrown vs auto_LiRPA's alpha-CROWN set up as ours:
  intermediate bounds fixed to CROWN's (passed as interm_bounds; its CROWN run is
  timed too), 20 Adam iterations, lr 0.1, no decay, no early stop. Same
  optimisation problem; the bounds differ only by the optimisation path.
- alpha-crown: both with their defaults. auto_LiRPA then also optimises the
  slopes used for the intermediate bounds (recomputed every iteration; lr 0.5,
  decay 0.98, early stop): much tighter on deep nets, much slower; ours keeps
  intermediate bounds fixed to CROWN's.
- alpha-crown-intermediate (not run by default): ours with
  AlphaOptions(optimize_intermediate=True) (intermediate slopes optimised too, 20
  iterations, lr 0.1) vs auto_LiRPA's default alpha-CROWN as in alpha-crown: both
  sides optimise the intermediate bounds.
Columns: s/img = the batched bound call / n (auto_LiRPA's BoundedModule is built
outside the timer, like our Domain object; a one-image warm-up of each runs first);
ratio = ours / auto_LiRPA time (< 1: ours faster); mean spec lb = mean over images
of min over rows of the row lower bounds; max rel diff = max over rows of
|ours - theirs| / max(1, |theirs|); ours tighter = rows where ours exceeds theirs by
more than 1e-4 * max(1, |theirs|) (for crown a sign of a bug on one side).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
import time
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
for p in (str(REPO), str(HERE)):
    if p not in sys.path:
        sys.path.insert(0, p)

import torch  # noqa: E402
from torch import nn  # noqa: E402

from bounds import NETS, bench_inputs, parse_eps  # noqa: E402
from domains import AlphaCrown, AlphaOptions, Crown  # noqa: E402
from networks import Affine, Conv, Input, Linear, Network, Relu, Reshape  # noqa: E402
from networks.datasets import shared_dir  # noqa: E402
from specs import linf_ball, robustness  # noqa: E402

DEFAULT_EPS = {
    "mnist_mlp": "0.02", "mnist_conv": "0.02",
    "mnist-net_256x2": "0.02", "mnist-net_256x4": "0.02", "mnist-net_256x6": "0.02",
    "mnist_0.1": "0.05", "convSmallRELU__Point": "2/255",
}
DEFAULT_NETS = ("mnist-net_256x2", "mnist-net_256x6", "mnist_0.1", "convSmallRELU__Point")
METHODS = ("crown", "crown-lirpa-default", "alpha-crown-fixed", "alpha-crown", "alpha-crown-intermediate")
DEFAULT_METHODS = METHODS[:4]  # alpha-crown-intermediate on request: it reruns auto_LiRPA's slowest method
TIGHTER_TOL = 1e-4

# auto_LiRPA optimisation options reproducing our AlphaOptions() schedule (alpha-crown-fixed).
MATCHED_ALPHA_ARGS = {"iteration": 20, "lr_alpha": 0.1, "lr_decay": 1.0, "early_stop_patience": 10**9,
                      "start_save_best": -1}


# ------------------------------------------------------------- IR -> torch

class _Reshape(nn.Module):
    """x -> x.reshape(B, *shape) (our Reshape layer)."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        super().__init__()
        self.shape = tuple(shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], *self.shape)


class _Affine(nn.Module):
    """x -> x * scale + shift with constant per-sample tensors (our Affine layer)."""

    def __init__(self, scale: torch.Tensor, shift: torch.Tensor) -> None:
        super().__init__()
        # with a leading batch dim of 1: auto_LiRPA's patches mode wants 4-d conv-side constants
        self.register_buffer("scale", scale.detach().clone().float().unsqueeze(0))
        self.register_buffer("shift", shift.detach().clone().float().unsqueeze(0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale + self.shift


def _channel_affine(layer: Affine) -> nn.Conv2d | None:
    """A per-channel x * s_c + t_c on (C, H, W) as a fixed 1x1 Conv2d with diagonal weights
    (exact in float: the off-diagonal products are zeros), or None if not per-channel.
    auto_LiRPA's default 'patches' mode cannot push a per-pixel constant Mul behind a conv."""
    scale, shift = layer.scale, layer.shift
    if scale.dim() != 3 or shift.shape != scale.shape:
        return None
    s, t = scale[:, :1, :1], shift[:, :1, :1]
    if not (torch.equal(scale, s.expand_as(scale)) and torch.equal(shift, t.expand_as(shift))):
        return None
    c = scale.shape[0]
    conv = nn.Conv2d(c, c, 1)
    conv.weight.data.copy_(torch.diag(s.flatten()).reshape(c, c, 1, 1))
    conv.bias.data.copy_(t.flatten())
    return conv


def to_torch(net: Network) -> nn.Sequential:
    """An equivalent nn.Sequential for a chain-shaped network of Linear/Conv/Affine/Relu/Reshape."""
    mods: list[nn.Module] = []
    prev = net.input.name
    for node in net.nodes[1:]:
        if node.inputs != (prev,):
            raise ValueError(f"node '{node.name}' is not part of a simple chain; the converter handles chains only")
        prev = node.name
        layer = node.layer
        if isinstance(layer, Linear):
            lin = nn.Linear(layer.weight.shape[1], layer.weight.shape[0])
            lin.weight.data.copy_(layer.weight)
            lin.bias.data.copy_(layer.bias)
            mods.append(lin)
        elif isinstance(layer, Conv):
            padding = layer.symmetric_padding
            if padding is None:
                t, le, b, r = layer.pads
                mods.append(nn.ZeroPad2d((le, r, t, b)))
                padding = (0, 0)
            c_out, c_in, kh, kw = layer.weight.shape
            conv = nn.Conv2d(c_in, c_out, (kh, kw), layer.stride, padding, layer.dilation)
            conv.weight.data.copy_(layer.weight)
            conv.bias.data.copy_(layer.bias)
            mods.append(conv)
        elif isinstance(layer, Affine):
            mods.append(_channel_affine(layer) or _Affine(layer.scale, layer.shift))
        elif isinstance(layer, Relu):
            mods.append(nn.ReLU())
        elif isinstance(layer, Reshape):
            mods.append(nn.Flatten() if len(layer.shape) == 1 else _Reshape(layer.shape))
        elif isinstance(layer, Input):
            continue
        else:
            raise ValueError(f"converter: no torch module for op {layer.op} (node '{node.name}')")
    return nn.Sequential(*mods).eval()


def check_conversion(net: Network, model: nn.Module, x: torch.Tensor, region) -> float:
    """Max |ours - torch| of the outputs on x and on random points of the region; raises above 1e-5."""
    pts = torch.cat([x, region.sample(4).flatten(0, 1)])
    with torch.no_grad():
        ours, theirs = net.logits(pts), model(pts).reshape(pts.shape[0], -1)
    err = float((ours - theirs).abs().max())
    scale = max(1.0, float(ours.abs().max()))
    if err > 1e-5 * scale:
        raise SystemExit(f"converted torch model differs from our forward by {err:.3g} (> 1e-5 x {scale:.3g})")
    return err


# ------------------------------------------------------------------ bounds

def ours(method: str, net: Network, region, spec) -> torch.Tensor:
    """Spec row lower bounds (B, m) with our CROWN / alpha-CROWN (default options,
    but optimised intermediate bounds for alpha-crown-intermediate)."""
    if method.startswith("crown"):
        domain = Crown(net)
    elif method == "alpha-crown-intermediate":
        domain = AlphaCrown(net, alpha=AlphaOptions(optimize_intermediate=True))
    else:
        domain = AlphaCrown(net)
    return domain.bound(region, spec).spec_lower


def lirpa_runner(model: nn.Module, x: torch.Tensor, method: str):
    """Build auto_LiRPA's BoundedModule for `method` (not timed) and return
    run(region, C) -> spec row lower bounds (B, m) (the timed part)."""
    from auto_LiRPA import BoundedModule, BoundedTensor, PerturbationLpNorm

    opts: dict = {"compare_crown_with_ibp": True} if method in ("crown", "alpha-crown-fixed") else {}
    if method == "alpha-crown-fixed":
        opts["optimize_bound_args"] = dict(MATCHED_ALPHA_ARGS)
    bounded = BoundedModule(model, torch.zeros_like(x[:1]), bound_opts=opts, device="cpu", verbose=False)

    def run(region, C: torch.Tensor) -> torch.Tensor:
        center = (region.lower + region.upper) / 2
        bt = BoundedTensor(center, PerturbationLpNorm(norm=float("inf"), x_L=region.lower, x_U=region.upper))
        if method in ("crown", "crown-lirpa-default"):
            lb, _ = bounded.compute_bounds(x=(bt,), C=C, method="CROWN", bound_upper=False)
        elif method in ("alpha-crown", "alpha-crown-intermediate"):
            lb, _ = bounded.compute_bounds(x=(bt,), C=C, method="alpha-CROWN", bound_upper=False)
        else:  # alpha-crown-fixed: CROWN intermediate bounds, then alpha for the spec rows only
            bounded.compute_bounds(x=(bt,), C=C, method="CROWN", bound_upper=False)
            interm = {r.inputs[0].name: (r.inputs[0].lower.detach(), r.inputs[0].upper.detach())
                      for r in bounded.relus}
            lb, _ = bounded.compute_bounds(x=(bt,), C=C, method="alpha-CROWN", bound_upper=False,
                                           interm_bounds=interm)
        return lb.detach()
    return run


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def compare(net_name: str, eps_text: str, count: int, methods: list[str]) -> list[dict]:
    net, x, y = bench_inputs(NETS[net_name], count)
    eps = parse_eps(eps_text)
    region, spec = linf_ball(x, eps, 0.0, 1.0), robustness(y, 10)
    model = to_torch(net)
    err = check_conversion(net, model, x, region)
    C = spec.C
    rows = []
    for method in methods:
        # one-image warm-ups (lazy initialisation is not timed)
        ours(method, net, region[0:1], spec[0:1])
        lirpa_runner(model, x, method)(region[0:1], C[0:1])
        mine, t_ours = timed(lambda: ours(method, net, region, spec))
        run = lirpa_runner(model, x, method)
        theirs, t_lirpa = timed(lambda: run(region, C))
        diff = mine.double() - theirs.double()
        scale = theirs.double().abs().clamp(min=1.0)
        n = x.shape[0]
        rows.append({
            "net": net_name, "eps": eps_text, "n": n, "method": method,
            "ours": t_ours / n, "lirpa": t_lirpa / n,
            "lb_ours": float(spec.spec_margin(mine).double().mean()),
            "lb_lirpa": float(spec.spec_margin(theirs.float()).double().mean()),
            "maxdiff": float(diff.abs().max()), "maxrel": float((diff.abs() / scale).max()),
            "tighter": int((diff > TIGHTER_TOL * scale).sum()), "rows": diff.numel(),
            "proven_ours": int(spec.proven(mine).sum()), "proven_lirpa": int(spec.proven(theirs.float()).sum()),
            "conv_err": err,
        })
    return rows


COLUMNS = ("net", "eps", "n", "method", "ours s/img", "auto_LiRPA s/img", "ratio", "mean spec lb ours",
           "mean spec lb auto_LiRPA", "proven ours / auto_LiRPA", "max abs diff", "max rel diff", "ours tighter")


def format_row(r: dict) -> str:
    cells = [r["net"], r["eps"], str(r["n"]), r["method"], f"{r['ours']:.4f}", f"{r['lirpa']:.4f}",
             f"{r['ours'] / r['lirpa']:.2f}", f"{r['lb_ours']:.6g}", f"{r['lb_lirpa']:.6g}",
             f"{r['proven_ours']} / {r['proven_lirpa']}", f"{r['maxdiff']:.2e}", f"{r['maxrel']:.1e}",
             f"{r['tighter']}/{r['rows']}"]
    return "| " + " | ".join(cells) + " |"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nets", default=",".join(DEFAULT_NETS),
                        help=f"comma-separated (default {','.join(DEFAULT_NETS)}; choices {','.join(NETS)})")
    parser.add_argument("--methods", default=",".join(DEFAULT_METHODS),
                        help=f"comma-separated subset of {','.join(METHODS)} (default {','.join(DEFAULT_METHODS)})")
    parser.add_argument("--eps", help="one eps for every network (e.g. 0.02 or 2/255); default per network: "
                        + ", ".join(f"{k} {v}" for k, v in DEFAULT_EPS.items()))
    parser.add_argument("--count", type=int, default=None, help="first COUNT correctly classified images (default 100)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads for both (default torch's)")
    parser.add_argument("--quick", action="store_true", help="smoke test: 3 images")
    args = parser.parse_args(argv)

    try:
        # auto_LiRPA resets warning filters on import and then warns that torch.jit.script
        # is deprecated; keep that noise out of the output
        with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            import auto_LiRPA
    except ImportError as e:
        print(f"auto_LiRPA is not importable with {sys.executable} ({e}).\n"
              "It is not a project dependency: set up a throwaway venv as described in benchmarks/README.md "
              "and run this script with that venv's python. Nothing compared.")
        return 0
    warnings.filterwarnings("ignore", category=DeprecationWarning)

    nets = [n.strip() for n in args.nets.split(",") if n.strip()]
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    bad = [n for n in nets if n not in NETS] + [m for m in methods if m not in METHODS]
    if bad:
        raise SystemExit(f"unknown network/method {', '.join(bad)}")
    if shared_dir() is None:
        skipped = [n for n in nets if NETS[n].shared]
        nets = [n for n in nets if not NETS[n].shared]
        if skipped:
            print(f"note: skipped {', '.join(skipped)}: ../shared not found")
    if args.threads:
        torch.set_num_threads(args.threads)
    count = args.count or (3 if args.quick else 100)

    print(f"# CROWN / alpha-CROWN: ours vs auto_LiRPA {auto_LiRPA.__version__}; torch {torch.__version__}, "
          f"{torch.get_num_threads()} thread(s); first {count} correctly classified test images; "
          "ratio = ours / auto_LiRPA time")
    print()
    print("| " + " | ".join(COLUMNS) + " |")
    print("|" + "|".join("---" for _ in COLUMNS) + "|", flush=True)
    worst = 0.0
    for net_name in nets:
        for r in compare(net_name, args.eps or DEFAULT_EPS[net_name], count, methods):
            print(format_row(r), flush=True)
            if r["method"] == "crown":
                worst = max(worst, r["maxrel"])
    if "crown" in methods:
        verdict = "agree" if worst <= TIGHTER_TOL else "DIFFER"
        print(f"\nCROWN spec lower bounds {verdict} with auto_LiRPA (compare_crown_with_ibp): "
              f"max |ours - theirs| / max(1, |theirs|) = {worst:.1e} (tolerance {TIGHTER_TOL:g})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
