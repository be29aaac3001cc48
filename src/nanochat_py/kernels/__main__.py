"""`python -m nanochat_py.kernels`: build this environment's CPU kernels now (what `make` runs at install).

--background is how a run that found no build starts one: it gives up at once if another process is
already building. --rebuild throws away the current build (and a remembered failure) first.
"""

from __future__ import annotations

import argparse
import logging
import sys

from . import VARIANTS, Build, build, kernel_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nanochat_py.kernels", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--variant",
        choices=VARIANTS,
        default="native",
        help="native: this CPU's widest vectors; avx2, portable: the narrower builds the tests check",
    )
    parser.add_argument("--background", action="store_true", help="give up at once if another build runs")
    parser.add_argument("--rebuild", action="store_true", help="discard the current build first")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="nanochat-py: %(message)s", stream=sys.stderr)
    target = Build(args.variant)
    if args.rebuild:
        target.library.unlink(missing_ok=True)
        target.failed.unlink(missing_ok=True)
    if args.background:
        return 0 if target.compile(wait=False) else 1
    if not target.library.exists():
        print(f"nanochat-py: building the CPU kernels for this machine into {kernel_dir()} (once, about 15 s)",
              file=sys.stderr, flush=True)  # fmt: skip
    return 0 if build(args.variant) is not None else 1


if __name__ == "__main__":
    sys.exit(main())
