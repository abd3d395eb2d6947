"""gapkit.ipi: a short i-PI NVT run driven by ``gapkit ipi`` over a UNIX socket."""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from ase.io import read, write

from gapkit import GAPCalculator
from gapkit.ipi import extras_of, socket_path

pytest.importorskip("ipi")

N_STEPS = 4
INPUT = """<simulation verbosity='low' safe_stride='1000' sockets_prefix='{prefix}'>
  <output prefix='sim'>
    <properties stride='1' filename='out'> [ step, potential{{electronvolt}} ] </properties>
    <trajectory filename='pos' stride='1' format='ase' cell_units='ase'> positions{{ase}} </trajectory>
    <trajectory filename='for' stride='1' format='ase' cell_units='ase'> forces{{ase}} </trajectory>
    <trajectory filename='xtr' stride='1' extra_type='raw'> extras </trajectory>
  </output>
  <total_steps>{steps}</total_steps>
  <prng><seed>12345</seed></prng>
  <ffsocket name='gap' mode='unix' pbc='false'>
    <address>gapkit</address> <latency>1e-4</latency>
  </ffsocket>
  <system>
    <initialize nbeads='1'>
      <file mode='xyz' units='angstrom'> init.xyz </file>
      <velocities mode='thermal' units='kelvin'> 300 </velocities>
    </initialize>
    <forces><force forcefield='gap'/></forces>
    <motion mode='dynamics'>
      <dynamics mode='nvt'>
        <timestep units='femtosecond'> 0.5 </timestep>
        <thermostat mode='langevin'><tau units='femtosecond'> 100 </tau></thermostat>
      </dynamics>
    </motion>
    <ensemble><temperature units='kelvin'> 300 </temperature></ensemble>
  </system>
</simulation>
"""


def _ipi_command() -> list[str]:
    exe = Path(sys.executable).with_name("i-pi")
    exe = str(exe) if exe.exists() else shutil.which("i-pi")
    if exe is None:
        pytest.skip("ipi is importable but its i-pi script is not on PATH")
    return [sys.executable, exe, "input.xml"]


def _read_frames(path: Path) -> list[np.ndarray]:
    """The (n, 3) arrays of an i-PI ``format='ase'`` (extxyz, 8 decimals) trajectory."""
    frames = read(path, ":", format="extxyz")
    # ASE moves a forces column to a SinglePointCalculator
    return [a.get_forces().copy() if a.calc is not None else a.positions.copy()
            for a in frames]


def _read_extras(path: Path) -> list[dict]:
    """The JSON extras of an i-PI ``extra_type='raw'`` trajectory, one per step."""
    out = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if line.startswith("{"):  # i-PI writes the dict of lists, one per bead
            out.append(json.loads(ast.literal_eval(line)["raw"][0]))
    return out


def test_socket_path():
    assert socket_path("gap") == "/tmp/ipi_gap"
    assert socket_path("/tmp/x/sock") == "/tmp/x/sock"
    assert socket_path("gap", "/run/ipi_") == "/run/ipi_gap"


def test_extras_of_plain_json():
    res = {"energy": 1.0, "energy_std": np.float64(0.1), "forces_std": np.ones((2, 3)),
           "flagged": True, "flagged_atoms": np.array([True, False])}
    out = json.loads(json.dumps(extras_of(res)))
    assert out == {"energy_std": 0.1, "forces_std": [[1.0] * 3] * 2, "flagged": 1,
                   "flagged_atoms": [1, 0]}


def test_ipi_nvt_run_over_unix_socket(small_model, train_frames, tmp_path):
    atoms = train_frames[0].copy()
    atoms.calc = None
    model_path = small_model.save(tmp_path / "model.npz")
    write(tmp_path / "init.xyz", atoms, format="xyz",
          comment="# CELL(abcABC): 30.0 30.0 30.0 90.0 90.0 90.0 positions{angstrom} cell{angstrom}")
    (tmp_path / "input.xml").write_text(INPUT.format(prefix=f"{tmp_path}/", steps=N_STEPS))
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    server = subprocess.Popen(_ipi_command(), cwd=tmp_path, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        driver = subprocess.run(
            [sys.executable, "-m", "gapkit", "ipi", str(model_path), "--structure", "init.xyz",
             "--unix", "gapkit", "--sockets-prefix", f"{tmp_path}/", "--connect-timeout", "30",
             "--flag-threshold", "forces=0.001"],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
        out, _ = server.communicate(timeout=60)
    finally:
        if server.poll() is None:
            server.kill()
            server.communicate()
    assert driver.returncode == 0, driver.stderr + driver.stdout
    assert server.returncode == 0, out
    assert "ended the run" in driver.stdout

    positions = _read_frames(next(tmp_path.glob("sim.pos*")))
    forces = _read_frames(next(tmp_path.glob("sim.for*")))
    extras = _read_extras(next(tmp_path.glob("sim.xtr*")))
    assert len(positions) == len(forces) == N_STEPS + 1 or len(positions) == len(forces) == N_STEPS
    assert len(extras) >= N_STEPS
    assert not np.allclose(positions[0], positions[-1])  # the atoms moved

    calc = GAPCalculator(small_model, compute_std=True)
    for pos, frc, xtr in zip(positions, forces, extras[-len(positions):]):
        a = atoms.copy()
        a.positions[:] = pos
        a.calc = calc
        ref = a.get_forces()
        # the extxyz trajectories keep 8 decimals of Å and eV/Å
        np.testing.assert_allclose(frc, ref, rtol=1e-6, atol=2e-6)
        np.testing.assert_allclose(np.array(xtr["forces_std"]), calc.results["forces_std"],
                                   rtol=1e-5, atol=1e-8)
        assert xtr["energy_std"] == pytest.approx(calc.results["energy_std"], rel=1e-5)
        assert xtr["energy_std"] > 0 and np.all(np.array(xtr["forces_std"]) > 0)
        assert xtr["flagged"] == 1 and len(xtr["flagged_atoms"]) == len(atoms)


def test_serve_sends_the_virial_of_a_periodic_cell(tmp_path):
    """ASE's i-PI server (SocketIOCalculator) receives the GAP's energy, forces and stress."""
    import threading

    from ase.build import bulk
    from ase.calculators.emt import EMT
    from ase.calculators.socketio import SocketIOCalculator

    from gapkit import GAP, SOAP
    from gapkit.ipi import serve

    frames = []
    for k in range(4):
        a = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((2, 1, 1))
        a.set_cell(a.cell.array * (1 + 0.01 * k), scale_atoms=True)
        a.rattle(0.05, seed=k)
        a.calc = EMT()
        a.get_potential_energy(), a.get_forces(), a.get_stress()
        frames.append(a)
    model = GAP(SOAP(r_cut=3.5, n_max=3, l_max=2), n_sparse=10, e0="zero", calibrate=False,
                random_state=0).fit(frames)
    atoms = frames[0].copy()
    atoms.cell[1, 0] += 0.2  # triclinic
    name = f"gapkit_test_{os.getpid()}"
    result = {}
    with SocketIOCalculator(unixsocket=name, timeout=60) as server:
        thread = threading.Thread(target=lambda: result.update(
            n=serve(model, atoms, unix=name, compute_std=False, connect_timeout=30)))
        thread.start()
        atoms.calc = server
        energy, forces, stress = (atoms.get_potential_energy(), atoms.get_forces(),
                                  atoms.get_stress())
        atoms.positions[0, 0] += 0.01
        energy2 = atoms.get_potential_energy()
    thread.join(timeout=30)
    assert not thread.is_alive() and result["n"] == 2
    ref = atoms.copy()
    ref.positions[0, 0] -= 0.01
    ref.calc = GAPCalculator(model)
    assert energy == pytest.approx(ref.get_potential_energy(), abs=1e-9)
    np.testing.assert_allclose(forces, ref.get_forces(), atol=1e-9)
    np.testing.assert_allclose(stress, ref.get_stress(), atol=1e-10)
    assert energy2 != pytest.approx(energy, abs=1e-6)
