"""Abstract domains over the network IR.

Every domain implements `Domain.bound(region, spec=None, keep=False) -> BoundResult`
(see `domains.base`): sound lower/upper bounds of every output (and of every
node with keep=True), lower bounds of the spec rows C y + d, and `proven`.

| name          | class        | paper                                   |
|---------------|--------------|-----------------------------------------|
| `box`         | BoxDomain    | interval bound propagation              |
| `deepz`       | DeepZ        | Singh et al., NeurIPS 2018 (zonotopes)  |
| `deeppoly`    | DeepPoly     | Singh et al., POPL 2019                 |
| `crown`       | Crown        | Zhang et al., NeurIPS 2018              |
| `alpha-crown` | AlphaCrown   | Xu et al., ICLR 2021                    |

Adding a domain: one module with the element type and an op -> transformer
registry, one line in DOMAINS below; the contract and soundness suites in
tests/domains then run on it without new test code.
"""

from domains.base import BoundResult, Domain, DomainError
from domains.box import BoxDomain, interval_bounds
from domains.crown import AlphaCrown, AlphaOptions, Crown
from domains.deeppoly import DeepPoly, LinearBoundOptions
from domains.zonotope import DeepZ, Zonotope

DOMAINS: dict[str, type[Domain]] = {
    "box": BoxDomain,
    "deepz": DeepZ,
    "deeppoly": DeepPoly,
    "crown": Crown,
    "alpha-crown": AlphaCrown,
}


def get_domain(name: str) -> type[Domain]:
    """The domain class registered as `name` (DomainError listing the choices otherwise)."""
    try:
        return DOMAINS[name]
    except KeyError:
        raise DomainError(f"unknown domain '{name}' (choose from {', '.join(DOMAINS)})") from None


__all__ = [
    "AlphaCrown", "AlphaOptions", "BoundResult", "BoxDomain", "Crown", "DOMAINS", "DeepPoly", "DeepZ",
    "Domain", "DomainError", "LinearBoundOptions", "Zonotope", "get_domain", "interval_bounds",
]
