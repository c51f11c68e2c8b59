"""``python -m models``: a table of the zoo (params, MACs, int8 flash, tunnel peak)."""
from models import ZOO, describe, tunnel_peak


def main():
    print(f"{'model':26} {'params':>10} {'MMACs':>8} {'flash KB':>9} {'tunnel peak KB':>15}")
    for name, builder in ZOO.items():
        model = builder()
        stats = describe(model)
        peak, _ = tunnel_peak(model)
        print(f"{name:26} {stats['params']:>10,} {stats['macs'] / 1e6:>8.1f} "
              f"{stats['flash_bytes'] / 1024:>9.1f} {f'{peak / 1024:.1f}' if peak else '-':>15}")


if __name__ == "__main__":
    main()
