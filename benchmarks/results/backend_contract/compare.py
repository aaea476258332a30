"""Before/after table of the backend-contract refactor's CPU benchmark rows (alphakern-cpu and
alphakern-torch): python compare.py bench_before_run1.json bench_after.json bench_before_run2.json"""

import json
import statistics
import sys


def load(path: str) -> dict:
    rows = json.load(open(path))["rows"]
    return {(r["provider"], r["label"], r["mode"], r["gates"]): r["ms"] for r in rows if r.get("ms")}


def main() -> None:
    b1, a, b2 = (load(p) for p in sys.argv[1:4])
    keys = sorted(k for k in a if k[0] in ("alphakern-cpu", "alphakern-torch") and k in b1)
    head = ("provider", "shape", "mode", "gates", "before1", "after", "before2")
    print(f"{head[0]:<16} {head[1]:<18} {head[2]:<8} {head[3]:<8} {head[4]:>9} {head[5]:>9} {head[6]:>9}  "
          "after/mean(before)")  # fmt: skip
    ratios = []
    for k in keys:
        ratio = a[k] / statistics.mean([b1[k]] + ([b2[k]] if k in b2 else []))
        ratios.append(ratio)
        print(f"{k[0]:<16} {k[1]:<18} {k[2]:<8} {k[3]:<8} {b1[k]:9.3f} {a[k]:9.3f} "
              f"{b2.get(k, float('nan')):9.3f}  {ratio:.3f}")  # fmt: skip
    print("geomean after/before:", statistics.geometric_mean(ratios), "rows:", len(ratios))


if __name__ == "__main__":
    main()
