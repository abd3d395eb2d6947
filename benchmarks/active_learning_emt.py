"""Active learning of fcc copper with EMT as the oracle (gapkit.physics.active.learn).

Start: three slightly rattled 8-atom fcc Cu cells (EMT-labelled). Held-out test set:
20 frames of an independent EMT Langevin MD at 1200 K on the same cell. The loop
samples with GAP-driven Langevin MD at 1200 K, labels the snapshots whose epistemic
force std passes the threshold with EMT, and refits. The script prints one row per
iteration and plots the test force MAE against the number of oracle calls.

Run::

    python benchmarks/active_learning_emt.py [--plot /tmp/active_learning.png]

About a minute on two cores (BLAS limited to one thread).
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import numpy as np
from ase import Atoms, units
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator
from ase.md.langevin import Langevin
from threadpoolctl import threadpool_limits

from sklearn.base import clone

from gapkit import GAP, SOAP, FlagThreshold
from gapkit.physics.active import learn
from gapkit.metrics import error_metrics

A_CU = 3.61  # Å, close to EMT's lattice constant


def cell() -> Atoms:
    return bulk("Cu", "fcc", a=A_CU, cubic=True).repeat((2, 1, 1))  # 8 atoms


def labelled(atoms):
    a = atoms.copy()
    b = atoms.copy()
    b.calc = EMT()
    a.calc = SinglePointCalculator(a, energy=b.get_potential_energy(), forces=b.get_forces(),
                                   stress=b.get_stress())
    return a


def start_set(n: int, seed: int) -> list:
    out = []
    for k in range(n):
        a = cell()
        a.rattle(0.03, seed=seed + k)
        out.append(labelled(a))
    return out


def emt_md_test_set(n: int, temperature: float, seed: int) -> list:
    """``n`` EMT-labelled snapshots, 50 steps (100 fs) apart, after 300 steps of warm-up."""
    rng = np.random.default_rng(seed)
    atoms = cell()
    atoms.calc = EMT()
    m = atoms.get_masses()[:, None]
    atoms.set_momenta(np.sqrt(m * units.kB * temperature) * rng.standard_normal((len(atoms), 3)))
    dyn = Langevin(atoms, 2 * units.fs, temperature_K=temperature, friction=0.02 / units.fs,
                   fixcm=False, rng=rng)
    dyn.run(300)
    frames = []
    for _ in range(n):
        dyn.run(50)
        frames.append(labelled(atoms))
    return frames


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--plot", default="/tmp/active_learning.png", help="output PNG")
    p.add_argument("--iterations", type=int, default=10)
    p.add_argument("--budget", type=int, default=40)
    p.add_argument("--threshold", type=float, default=0.01,
                   help="epistemic force std threshold, eV/Å")
    p.add_argument("--temperature", type=float, default=1200.0, help="sampling MD temperature, K")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workdir", default=None, help="restart folder (optional)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    with threadpool_limits(1):
        t0 = time.perf_counter()
        start = start_set(3, args.seed)
        test = emt_md_test_set(20, 1200.0, seed=1000 + args.seed)
        model = GAP(SOAP(r_cut=4.0, n_max=4, l_max=3), n_sparse=200, energy_noise=0.001,
                    force_noise=0.01, random_state=args.seed)
        threshold = FlagThreshold(forces=args.threshold)

        header = (f"{'iter':>4} {'n_train':>7} {'oracle':>6} {'sampled':>7} {'flags':>5} "
                  f"{'added':>5} {'max σF':>8} {'E MAE':>8} {'F MAE':>8} {'F RMSE':>8} "
                  f"{'fit s':>6}")
        units_row = (f"{'':>4} {'':>7} {'calls':>6} {'':>7} {'':>5} {'':>5} {'meV/Å':>8} "
                     f"{'meV/at':>8} {'meV/Å':>8} {'meV/Å':>8} {'':>6}")
        print(f"threshold: epistemic force std > {args.threshold} eV/Å; sampling MD at "
              f"{args.temperature:g} K; budget {args.budget} oracle calls")
        print(header)
        print(units_row)

        def row(e: dict) -> None:
            def f(key, scale=1e3):
                v = e.get(key)
                return f"{v * scale:8.1f}" if v is not None else f"{'-':>8}"

            print(f"{e['iteration']:>4} {e['n_train']:>7} {e['n_oracle_calls']:>6} "
                  f"{e.get('n_sampled', 0):>7} {e.get('n_flagged', 0):>5} {e.get('n_added', 0):>5} "
                  f"{f('sigma_forces_max')} {f('test_energy_mae_per_atom')} "
                  f"{f('test_forces_mae')} {f('test_forces_rmse')} {e['fit_time']:6.2f}",
                  flush=True)

        res = learn(model, EMT(), start, threshold=threshold, test=test,
                    n_iterations=args.iterations, budget=args.budget, sampler="md",
                    md_steps=100, md_temperature=args.temperature, timestep=2.0,
                    sample_interval=5, n_walkers=4, workdir=args.workdir,
                    restart=args.workdir is not None and (Path(args.workdir) / "log.json").is_file(),
                    random_state=args.seed, progress=row)
        elapsed = time.perf_counter() - t0
        print(f"stopped because: {res.stopped_because}; {len(res.train)} training structures, "
              f"{res.n_oracle_calls} oracle calls, {elapsed:.0f} s")

        entries = [res.initial] + res.log
        n_labelled = np.array([e["n_train"] for e in entries])
        fmae = np.array([e["test_forces_mae"] for e in entries]) * 1e3
        emae = np.array([e["test_energy_mae_per_atom"] for e in entries]) * 1e3
        # sigma of iteration i's samples belongs to the model fitted before it
        sig = [(prev["n_train"], e["sigma_forces_max"] * 1e3)
               for prev, e in zip(entries[:-1], entries[1:]) if e["sigma_forces_max"] is not None]

        # passive reference: the same numbers of structures, but snapshots of an
        # independent EMT MD at 1200 K (each one costs ~50 extra EMT calls to generate)
        passive_pool = emt_md_test_set(max(n_labelled) - len(start), 1200.0, seed=2000 + args.seed)
        cache = {}
        for n in n_labelled:
            if n not in cache:
                m = clone(model).fit(start + passive_pool[:n - len(start)])
                cache[n] = error_metrics(m.predict(test, stress=False), test)["forces_mae"] * 1e3
        passive = [cache[n] for n in n_labelled]
        print("passive reference (start + random EMT-MD snapshots), test force MAE meV/Å by "
              "n_train: " + ", ".join(f"{n}: {v:.1f}" for n, v in cache.items()))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    ax1.plot(n_labelled, fmae, "o-", color="C0", label="force MAE, active learning (meV/Å)")
    ax1.plot(n_labelled, passive, "^:", color="C2",
             label="force MAE, random EMT-MD snapshots instead (meV/Å)")
    ax1.plot(n_labelled, emae, "s--", color="C1", label="energy MAE, active learning (meV/atom)")
    ax1.set_yscale("log")
    ax1.set_ylim(top=10 ** (np.log10(np.nanmax(fmae)) + 1.0))  # room for the legend
    ax1.set_xlabel("labelled structures (3 start + oracle calls)")
    ax1.set_ylabel("test error (meV/Å, meV/atom)")
    ax1.set_title("Held-out EMT MD at 1200 K (20 frames)")
    ax1.grid(True, which="both", alpha=0.3)
    ax1.legend(loc="upper right", fontsize=9)
    if sig:
        x, y = zip(*sig)
        ax2.plot(x, y, "o-", color="C3", label=r"largest epistemic $\sigma_F$ among the samples")
    ax2.axhline(args.threshold * 1e3, color="k", ls=":", label="flag threshold")
    ax2.set_xlabel("labelled structures of the model that drove the MD")
    ax2.set_ylabel(r"epistemic force std $\sigma_F$ (meV/Å)")
    ax2.set_title(f"Uncertainty of GAP-MD samples at {args.temperature:g} K")
    ax2.grid(True, alpha=0.3)
    ax2.legend()
    fig.suptitle("Active learning of fcc Cu with EMT as the oracle (gapkit.physics.active.learn)")
    fig.savefig(args.plot, dpi=120)
    print(f"plot: {args.plot}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
