"""Serve a fitted GAP to `i-PI <https://ipi-code.org>`_ over its socket protocol.

i-PI runs the dynamics (NVE, NVT, NPT, path-integral MD with many beads, ...) and
asks a *driver* for the energy, forces and virial of each configuration it sends
(positions and cell) over a UNIX or TCP socket. :func:`serve` is such a driver: a
small loop on ASE's :class:`ase.calculators.socketio.IPIProtocol` (the wire format
and units) around :class:`gapkit.GAPCalculator`, which also sends, for every
configuration, i-PI's optional *extras* string: a JSON object with the model's
uncertainties and extrapolation flags (see :func:`extras_of`). ASE's own
``SocketClient`` sends no extras; otherwise the two behave the same.

The species come from a template structure (i-PI sends only positions and cell):
give the same structure i-PI starts from, with the same atom order. Stress (the
virial) is computed only for a fully periodic template.

Command line: ``gapkit ipi MODEL --structure init.xyz --unix NAME`` (or ``--host``
and ``--port``), also ``python -m gapkit ipi ...`` or ``python -m gapkit.ipi ...``
(:mod:`gapkit.ipi.__main__`). In i-PI's input, the forcefield is ``<ffsocket name="gap" mode="unix"><address>NAME</address></ffsocket>``;
the extras appear in the output with ``<trajectory filename="x" extra_type="raw">
extras </trajectory>`` (or ``extra_type="energy_std"``, ``"forces_std"``, ...).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time

import numpy as np
from ase import Atoms
from ase.calculators.calculator import all_changes
from ase.calculators.socketio import IPIProtocol, SocketClosed

from gapkit.calculator import GAPCalculator
from gapkit.uncertainty.flags import FlagThreshold

logger = logging.getLogger(__name__)

#: i-PI's default prefix of UNIX socket names (``<address>NAME</address>`` binds
#: ``/tmp/ipi_NAME``; the ``sockets_prefix`` attribute of ``<simulation>`` changes it).
DEFAULT_PREFIX = "/tmp/ipi_"
#: Results sent in the extras (when computed), in eV and eV/Å (ASE's units, not i-PI's).
EXTRA_KEYS = ("energy_std", "energy_std_epistemic", "energy_std_aleatoric", "forces_std",
              "forces_std_epistemic", "forces_std_aleatoric", "energies_std", "flagged",
              "flagged_atoms")


def socket_path(unix: str, sockets_prefix: str = DEFAULT_PREFIX) -> str:
    """The file of i-PI's UNIX socket ``unix``.

    Parameters
    ----------
    unix : str
        i-PI's ``<address>``; an absolute path is taken as the socket file itself.
    sockets_prefix : str, default ``"/tmp/ipi_"``
        i-PI's ``sockets_prefix`` (the default is i-PI's).

    Returns
    -------
    str
    """
    return unix if os.path.isabs(unix) else sockets_prefix + unix


def extras_of(results: dict) -> dict:
    """The extras JSON object of one calculation: the uncertainties (eV, eV/Å) and
    flags found in ``results`` (a :class:`GAPCalculator`'s), as plain lists and
    numbers (flags as 0/1).

    Parameters
    ----------
    results : dict
        ``GAPCalculator.results``.

    Returns
    -------
    dict
    """
    out = {}
    for key in EXTRA_KEYS:
        if key in results and results[key] is not None:
            val = np.asarray(results[key])
            if val.dtype == bool:
                val = val.astype(int)
            out[key] = val.tolist()
    return out


def _connect(unix: str | None, host: str, port: int, sockets_prefix: str,
             connect_timeout: float) -> socket.socket:
    """A socket connected to i-PI, retried every 0.1 s for ``connect_timeout`` s
    (i-PI may not have opened it yet)."""
    deadline = time.monotonic() + connect_timeout
    while True:
        if unix is not None:
            sock = socket.socket(socket.AF_UNIX)
            address = socket_path(unix, sockets_prefix)
        else:
            sock = socket.socket(socket.AF_INET)
            address = (host, port)
        try:
            sock.connect(address)
            logger.info("connected to i-PI at %s", address)
            return sock
        except (FileNotFoundError, ConnectionRefusedError):
            sock.close()
            if time.monotonic() > deadline:
                raise OSError(f"no i-PI server at {address} after {connect_timeout:g} s "
                              "(is i-PI running with the same address?)") from None
            time.sleep(0.1)


def serve(model, atoms: Atoms, *, unix: str | None = None, host: str = "localhost",
          port: int = 31415, sockets_prefix: str = DEFAULT_PREFIX, compute_std: bool = True,
          flag_threshold: FlagThreshold | None = None, connect_timeout: float = 30.0,
          timeout: float | None = None, log=None) -> int:
    """Drive i-PI with a fitted GAP until i-PI sends EXIT or closes the socket.

    Parameters
    ----------
    model : GAP
        A fitted model.
    atoms : ase.Atoms
        Template with the species (and order) of i-PI's system; its ``pbc`` decides
        whether the virial is computed (fully periodic only). Not modified.
    unix : str, optional
        i-PI's UNIX socket address (``<address>``); None: TCP at ``host:port``.
    host : str, default "localhost"
        TCP host (when ``unix`` is None).
    port : int, default 31415
        TCP port (when ``unix`` is None).
    sockets_prefix : str, default ``"/tmp/ipi_"``
        Prefix of UNIX socket files, as i-PI's ``sockets_prefix``.
    compute_std : bool, default True
        Compute and send σ_E (eV) and σ_F (eV/Å) in the extras at every step.
    flag_threshold : FlagThreshold, optional
        Send ``flagged`` and ``flagged_atoms`` in the extras.
    connect_timeout : float, default 30
        Seconds to wait for i-PI's socket to appear.
    timeout : float, optional
        Socket timeout in s between messages (None: wait forever, as i-PI may wait
        for other drivers).
    log : file object, optional
        Log the protocol messages there (ASE's ``IPIProtocol`` log).

    Returns
    -------
    int
        The number of configurations evaluated.
    """
    calc = GAPCalculator(model, compute_std=compute_std, flag_threshold=flag_threshold)
    atoms = atoms.copy()
    atoms.calc = None
    periodic = bool(np.all(atoms.pbc))
    properties = ["energy", "forces"] + (["stress"] if periodic else [])
    sock = _connect(unix, host, port, sockets_prefix, connect_timeout)
    sock.settimeout(timeout)
    protocol = IPIProtocol(sock, txt=log)
    state, n_calls, reply = "READY", 0, None
    try:
        while True:
            try:
                msg = protocol.recvmsg()
            except SocketClosed:
                break
            if msg == "EXIT":
                break
            if msg == "STATUS":
                protocol.sendmsg(state)
            elif msg == "INIT":
                protocol.recvinit()
                state = "READY"
            elif msg == "POSDATA":
                cell, _icell, positions = protocol.recvposdata()
                if len(positions) != len(atoms):
                    raise ValueError(f"i-PI sent {len(positions)} atoms, the template has "
                                     f"{len(atoms)}: give the structure i-PI runs")
                atoms.cell[:] = cell
                atoms.positions[:] = positions
                calc.calculate(atoms, properties, all_changes)
                res = calc.results
                virial = (-atoms.get_volume() * _voigt_to_3x3(res["stress"]) if periodic
                          else np.zeros((3, 3)))
                extra = json.dumps(extras_of(res)).encode() if compute_std or flag_threshold \
                    else b" "
                reply = (res["energy"], np.asarray(res["forces"]), virial,
                         np.frombuffer(extra, dtype=np.int8))
                n_calls += 1
                state = "HAVEDATA"
            elif msg == "GETFORCE":
                if state != "HAVEDATA":
                    raise RuntimeError(f"i-PI asked for forces in state {state}")
                protocol.sendforce(*reply)
                state = "READY"
            else:
                raise RuntimeError(f"unexpected i-PI message {msg!r}")
    finally:
        sock.close()
    logger.info("i-PI driver done after %d configurations", n_calls)
    return n_calls


def _voigt_to_3x3(stress) -> np.ndarray:
    """ASE's Voigt stress (xx, yy, zz, yz, xz, xy) as a symmetric 3x3 matrix."""
    xx, yy, zz, yz, xz, xy = np.asarray(stress, dtype=float)
    return np.array([[xx, xy, xz], [xy, yy, yz], [xz, yz, zz]])
