"""Reading structures and their reference labels.

Everything that touches raw input lives here: extxyz reading
(:mod:`gapkit.data.reading`), geometry checks (:mod:`gapkit.data.geometry`), label
extraction and the virial/stress rules (:mod:`gapkit.data.labels`), checks of the
labels before a fit (:mod:`gapkit.data.consistency`) and the per-species reference
energies E0 (:mod:`gapkit.data.reference`).

Units are ASE's: positions in Å, energies in eV, forces in eV/Å, virials in eV.
The virial follows GAP's convention, ``virial = -stress * volume`` (eV), so that a
cell stretched beyond its equilibrium (under tensile stress, ASE stress > 0) has a
negative virial.
"""

from ase.data import chemical_symbols

from gapkit.data.consistency import check_virial_scale, virial_scale_report
from gapkit.data.geometry import MIN_DISTANCE, check_geometry, closest_distance
from gapkit.data.labels import (LabelKeys, Labels, get_labels, matrix_to_voigt,
                                stress_to_virial, voigt_to_matrix)
from gapkit.data.reading import (as_frame_list, default_data_dir, duplicate_frames,
                                 equivalent_groups, read_frames)
from gapkit.data.reference import (ReferenceEnergies, check_e0_dict, fit_reference_energies,
                                   isolated_atom_energies, split_isolated)

__all__ = ["MIN_DISTANCE", "LabelKeys", "Labels", "ReferenceEnergies", "as_frame_list",
           "check_e0_dict", "check_geometry", "check_virial_scale", "chemical_symbols",
           "closest_distance", "default_data_dir", "duplicate_frames", "equivalent_groups",
           "fit_reference_energies",
           "get_labels", "isolated_atom_energies", "matrix_to_voigt", "read_frames",
           "split_isolated", "stress_to_virial", "virial_scale_report", "voigt_to_matrix"]
