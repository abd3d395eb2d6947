#!/usr/bin/env python
"""Energy, forces and stress of a large periodic Si cell: time and peak memory.

Fits a small GAP on the first ``--n-train`` cells of mlearn's Si training set
(``train.xyz`` of ``--data``, else ``$GAPKIT_SHARED_DATA[/si_mlearn]``, else
``<repo>/../shared/data/si_mlearn``) and evaluates a rattled diamond supercell of
``8 * repeat**3`` atoms through :class:`gapkit.GAPCalculator`, reporting wall time
and the process's peak RSS. Exits 0 with a message when the data is absent.

Example::

    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 python benchmarks/large_cell.py --repeat 5
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

import harness as h


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5, help="supercell repeats of the 8-atom cell")
    ap.add_argument("--n-train", type=int, default=20)
    ap.add_argument("--n-sparse", type=int, default=300)
    h.add_data_dir_argument(ap, "si_mlearn", ("train.xyz",), flag="--data")
    args = ap.parse_args(argv)
    data_dir = h.find_data_dir(args.data, "si_mlearn", ("train.xyz",), "the mlearn Si folder")
    if data_dir is None:
        return 0
    from ase.build import bulk
    from ase.io import read

    from gapkit import GAP, SOAP, GAPCalculator

    model = GAP(SOAP(r_cut=5.4, n_max=8, l_max=8, sigma=0.5), n_sparse=args.n_sparse,
                random_state=0).fit(read(data_dir / "train.xyz", f":{args.n_train}"))
    atoms = bulk("Si", "diamond", 5.43, cubic=True).repeat((args.repeat,) * 3)
    atoms.rattle(0.05, seed=0)
    rss0 = h.maxrss_mib()
    atoms.calc = GAPCalculator(model)
    t0 = time.perf_counter()
    atoms.calc.calculate(atoms, ["energy", "forces", "stress"])
    dt = time.perf_counter() - t0
    rss = h.maxrss_mib()
    print(f"command: {' '.join(sys.argv)}")
    print(f"{len(atoms)} atoms, M = {len(model.alpha_)}: energy + forces + stress in {dt:.2f} s "
          f"({dt / len(atoms) * 1e6:.0f} µs/atom); peak RSS {rss:.0f} MiB (before: {rss0:.0f} MiB)")
    print(f"E/atom {atoms.calc.results['energy'] / len(atoms):.4f} eV, "
          f"max |F| {np.abs(atoms.calc.results['forces']).max():.3f} eV/Å")
    return 0


if __name__ == "__main__":
    sys.exit(main())
