"""``python -m models``: a table of the zoo (params, MACs, int8 flash, tunnel peak);
``python -m models --write-figures`` rewrites models/zoo_figures.json (what ``build --list`` prints)."""
import sys

from models import ZOO, describe, tunnel_peak
from models.zoo import write_zoo_figures


def main():
    if "--write-figures" in sys.argv[1:]:
        print(f"wrote {write_zoo_figures()}")
        return
    print(f"{'model':26} {'params':>10} {'MMACs':>8} {'flash KB':>9} {'tunnel peak KB':>15}")
    for name, builder in ZOO.items():
        model = builder()
        stats = describe(model)
        peak, _ = tunnel_peak(model)
        print(f"{name:26} {stats['params']:>10,} {stats['macs'] / 1e6:>8.1f} "
              f"{stats['flash_bytes'] / 1024:>9.1f} {f'{peak / 1024:.1f}' if peak else '-':>15}")


if __name__ == "__main__":
    main()
