"""Physics beyond a local GP: Delta-learning baselines (Coulomb/Ewald, Born-Mayer) and
active learning."""
